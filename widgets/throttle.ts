/**
 * Coalescing rate limiter for widget updates: a fast training loop may call update() thousands of times a second,
 * but a frontend wants a few redraws a second. The first request after a quiet period goes out at once, later
 * ones within the interval collapse into a single trailing send, and the state is rendered at send time, so the
 * latest state is what arrives. flush() sends a pending state now (the final state is never lost).
 */

/** Time source and timers, injectable so tests can drive time by hand. */
export interface Clock {
  /** Milliseconds. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export class Throttle {
  private readonly intervalMs: number;
  private lastSent = -Infinity;
  private timer: unknown = null;
  private pending = false;
  /** How many times `send` ran. */
  sends = 0;

  /** `maxPerSecond` ≤ 0 or Infinity disables limiting. */
  constructor(private readonly send: () => void, maxPerSecond: number, private readonly clock: Clock = systemClock) {
    this.intervalMs = maxPerSecond > 0 && Number.isFinite(maxPerSecond) ? 1000 / maxPerSecond : 0;
  }

  /** Asks for a send: now if the interval has passed, else once at the end of it. */
  request(): void {
    this.pending = true;
    if (this.timer !== null) return;
    const wait = this.lastSent + this.intervalMs - this.clock.now();
    if (wait <= 0) this.fire();
    else this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.fire();
    }, wait);
  }

  /** Sends a pending request now. */
  flush(): void {
    if (this.timer !== null) {
      this.clock.clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.pending) this.fire();
  }

  /** Drops a pending request (nothing is sent). */
  cancel(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    this.pending = false;
  }

  get hasPending(): boolean {
    return this.pending;
  }

  private fire(): void {
    this.pending = false;
    this.lastSent = this.clock.now();
    this.sends++;
    this.send();
  }
}
