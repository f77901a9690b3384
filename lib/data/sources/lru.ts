/** A small least-recently-used cache with a byte budget (always keeps at least the newest entry). */
export class LruCache<K, V> {
  private readonly map = new Map<K, { value: V; bytes: number }>();
  private total = 0;

  constructor(readonly maxBytes: number, readonly maxEntries = Infinity) {}

  get(key: K): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    this.map.delete(key);
    this.map.set(key, e);
    return e.value;
  }

  set(key: K, value: V, bytes: number): void {
    const old = this.map.get(key);
    if (old) { this.total -= old.bytes; this.map.delete(key); }
    this.map.set(key, { value, bytes });
    this.total += bytes;
    while (this.map.size > 1 && (this.total > this.maxBytes || this.map.size > this.maxEntries)) {
      const [k, e] = this.map.entries().next().value as [K, { value: V; bytes: number }];
      this.map.delete(k);
      this.total -= e.bytes;
    }
  }

  get size(): number {
    return this.map.size;
  }
  get bytes(): number {
    return this.total;
  }
  clear(): void {
    this.map.clear();
    this.total = 0;
  }
}

/** Dedupes concurrent loads of the same key (several rows of one row group requested at once). */
export class Loader<K, V> {
  private readonly inflight = new Map<K, Promise<V>>();
  constructor(private readonly cache: LruCache<K, V>, private readonly load: (k: K) => Promise<{ value: V; bytes: number }>) {}
  async get(key: K): Promise<V> {
    const hit = this.cache.get(key);
    if (hit !== undefined) return hit;
    let p = this.inflight.get(key);
    if (!p) {
      p = this.load(key).then(({ value, bytes }) => {
        this.cache.set(key, value, bytes);
        return value;
      }).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }
}
