/**
 * The Jupyter wire protocol (messaging spec 5.3): multipart frames, HMAC-SHA256 signatures, binary buffers.
 *
 * A message on the wire is `[...identities, "<IDS|MSG>", signature, header, parent_header, metadata, content,
 * ...buffers]`. The signature is the hex HMAC of the four JSON frames only; buffers travel as raw frames after them
 * (widgets need them unencoded). An empty key means "no authentication" (the spec's rule); with a key, messages
 * whose signature is missing or wrong are rejected.
 */
import crypto from "node:crypto";

export const PROTOCOL_VERSION = "5.3";
const DELIMITER = "<IDS|MSG>";

export interface Header {
  msg_id: string;
  session: string;
  username: string;
  date: string;
  msg_type: string;
  version: string;
  [extra: string]: unknown;
}

/** A parsed message. `parent_header` is `{}` when there is no parent. */
export interface Message<C = Record<string, unknown>> {
  identities: Buffer[];
  header: Header;
  parent_header: Header | Record<string, never>;
  metadata: Record<string, unknown>;
  content: C;
  buffers: Buffer[];
}

/** Raised (and logged by the caller) for frames that are not a valid, correctly signed message. */
export class WireError extends Error {
  override name = "WireError";
}

export class Signer {
  private readonly key: Buffer;
  private readonly algorithm: string;

  constructor(key: string, scheme = "hmac-sha256") {
    if (key && scheme !== "hmac-sha256") throw new WireError(`unsupported signature_scheme ${scheme}`);
    this.key = Buffer.from(key, "utf8");
    this.algorithm = "sha256";
  }

  get enabled(): boolean {
    return this.key.length > 0;
  }

  sign(frames: ReadonlyArray<Buffer>): string {
    if (!this.enabled) return "";
    const h = crypto.createHmac(this.algorithm, this.key);
    for (const f of frames) h.update(f);
    return h.digest("hex");
  }

  /** Constant-time comparison, so the signature cannot be guessed byte by byte from timings. */
  verify(signature: string, frames: ReadonlyArray<Buffer>): boolean {
    if (!this.enabled) return true;
    const expected = Buffer.from(this.sign(frames), "utf8");
    const got = Buffer.from(signature, "utf8");
    return got.length === expected.length && crypto.timingSafeEqual(got, expected);
  }
}

export function newHeader(msgType: string, session: string, username = "kernel"): Header {
  return {
    msg_id: crypto.randomUUID(),
    session,
    username,
    date: new Date().toISOString(),
    msg_type: msgType,
    version: PROTOCOL_VERSION,
  };
}

function parseJsonFrame(frame: Buffer, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(frame.toString("utf8"));
  } catch {
    throw new WireError(`${what} is not JSON`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new WireError(`${what} is not an object`);
  return v as Record<string, unknown>;
}

/** Parses and authenticates one multipart message; throws WireError when it is malformed or badly signed. */
export function decode(frames: ReadonlyArray<Buffer>, signer: Signer): Message {
  const i = frames.findIndex((f) => f.length === DELIMITER.length && f.toString("latin1") === DELIMITER);
  if (i < 0) throw new WireError("no <IDS|MSG> delimiter");
  if (frames.length < i + 6) throw new WireError("too few frames");
  const signature = frames[i + 1]!.toString("utf8");
  const body = frames.slice(i + 2, i + 6);
  if (signer.enabled && !signature) throw new WireError("unsigned message");
  if (!signer.verify(signature, body)) throw new WireError("bad signature");
  const header = parseJsonFrame(body[0]!, "header") as Header;
  if (typeof header.msg_type !== "string" || typeof header.msg_id !== "string") throw new WireError("header lacks msg_type/msg_id");
  return {
    identities: frames.slice(0, i) as Buffer[],
    header,
    parent_header: parseJsonFrame(body[1]!, "parent_header") as Header,
    metadata: parseJsonFrame(body[2]!, "metadata"),
    content: parseJsonFrame(body[3]!, "content"),
    buffers: frames.slice(i + 6) as Buffer[],
  };
}

export type OutBuffer = ArrayBufferView | ArrayBuffer;

function toBuffer(b: OutBuffer): Buffer {
  if (b instanceof ArrayBuffer) return Buffer.from(b);
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** Serialises and signs a message; buffers are appended unencoded. */
export function encode(
  signer: Signer,
  identities: ReadonlyArray<Buffer>,
  header: Header,
  parent: Header | Record<string, never>,
  metadata: Record<string, unknown>,
  content: unknown,
  buffers: ReadonlyArray<OutBuffer> = [],
): Buffer[] {
  const body = [header, parent, metadata, content].map((o) => Buffer.from(JSON.stringify(o), "utf8"));
  return [...identities, Buffer.from(DELIMITER), Buffer.from(signer.sign(body)), ...body, ...buffers.map(toBuffer)];
}
