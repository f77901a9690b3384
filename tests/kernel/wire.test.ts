/** Wire protocol units: signing, verification, framing, buffers; cursor conversion; MIME bundles. */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { describe, it } from "node:test";
import { toMimeBundle, normalizeBundle } from "../../kernel/display.js";
import { codePointsToUtf16, utf16ToCodePoints } from "../../kernel/kernel.js";
import { decode, encode, newHeader, Signer, WireError } from "../../kernel/wire.js";

describe("wire", () => {
  const signer = new Signer("secret-key");
  const header = newHeader("execute_request", "session-1", "user");

  it("round-trips identities, JSON parts and binary buffers; signs only the JSON parts", () => {
    const frames = encode(signer, [Buffer.from("id-a"), Buffer.from("id-b")], header, {}, { m: 1 }, { code: "1+1" }, [new Uint8Array([1, 2, 3]), new Float32Array([0.5]).buffer]);
    assert.equal(frames[2]!.toString(), "<IDS|MSG>");
    const msg = decode(frames, signer);
    assert.deepEqual(msg.identities.map((b) => b.toString()), ["id-a", "id-b"]);
    assert.deepEqual(msg.header, header);
    assert.deepEqual(msg.metadata, { m: 1 });
    assert.deepEqual(msg.content, { code: "1+1" });
    assert.deepEqual([...msg.buffers[0]!], [1, 2, 3]);
    assert.equal(new Float32Array(new Uint8Array(msg.buffers[1]!).buffer)[0], 0.5);
    // The signature is the HMAC-SHA256 of header, parent, metadata, content (buffers excluded).
    const h = createHmac("sha256", "secret-key");
    for (const f of frames.slice(4, 8)) h.update(f);
    assert.equal(frames[3]!.toString(), h.digest("hex"));
  });

  it("rejects unsigned, badly signed and tampered messages", () => {
    const frames = encode(signer, [], header, {}, {}, { code: "x" });
    const unsigned = [...frames];
    unsigned[1] = Buffer.from("");
    assert.throws(() => decode(unsigned, signer), (e: unknown) => e instanceof WireError && /unsigned/.test((e as Error).message));
    assert.throws(() => decode(encode(new Signer("other"), [], header, {}, {}, {}), signer), /bad signature/);
    const tampered = [...frames];
    tampered[5] = Buffer.from(JSON.stringify({ code: "evil" }));
    assert.throws(() => decode(tampered, signer), /bad signature/);
    assert.throws(() => decode([Buffer.from("no delimiter")], signer), /delimiter/);
  });

  it("an empty key disables signing (the spec's rule)", () => {
    const open = new Signer("");
    const frames = encode(open, [], header, {}, {}, { a: 1 });
    assert.equal(frames[1]!.toString(), "");
    assert.deepEqual(decode(frames, open).content, { a: 1 });
  });

  it("converts cursor positions between code points and UTF-16", () => {
    const s = "a😀b😀c";
    assert.equal(codePointsToUtf16(s, 2), 3);
    assert.equal(codePointsToUtf16(s, 5), 7);
    assert.equal(utf16ToCodePoints(s, 3), 2);
    for (let cp = 0; cp <= 5; cp++) assert.equal(utf16ToCodePoints(s, codePointsToUtf16(s, cp)), cp);
  });

  it("builds MIME bundles: display protocol, bytes as base64, inspect fallback", async () => {
    const obj = { [Symbol.for("Jupyter.display")]: async () => ({ "image/png": new Uint8Array([255, 0]), "text/plain": "img" }) };
    assert.deepEqual(await toMimeBundle(obj), { "image/png": "/wA=", "text/plain": "img" });
    assert.deepEqual(await toMimeBundle({ a: [1, 2] }), { "text/plain": "{ a: [ 1, 2 ] }" });
    assert.deepEqual(await toMimeBundle("s"), { "text/plain": "'s'" });
    assert.throws(() => normalizeBundle("not a bundle"), TypeError);
  });
});
