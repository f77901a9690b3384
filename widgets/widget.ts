/**
 * The base of every widget: a plain object that renders its state as a MIME bundle. Nothing here needs a frontend
 * extension: a widget is shown once with a display id and redrawn with update_display_data, through the library's
 * display bridge (lib/cells/display.ts), at a limited rate.
 */
import { beforeCellEnds, display, updateDisplay, newDisplayId, displayChannel, JUPYTER_DISPLAY } from "../lib/cells/display.js";
import type { MimeBundle } from "../lib/cells/display.js";
import { Throttle, systemClock } from "./throttle.js";
import type { Clock } from "./throttle.js";

export interface WidgetOptions {
  /** Redraws per second at most (the final state is always sent by flush()). Default: per widget, 1–4. */
  maxUpdatesPerSecond?: number;
  /** Time source and timers (tests pass a fake one). */
  clock?: Clock;
  /** Use this display id instead of a fresh one. */
  displayId?: string;
}

export abstract class Widget<S extends object> {
  readonly displayId: string;
  protected state: S;
  protected readonly clock: Clock;
  private readonly throttle: Throttle;
  private shown = false;
  private warned = false;
  /** A change held back in text mode (see textUpdates). */
  private dirty = false;
  /** flush() is already due when the running cell ends. */
  private flushAtCellEnd = false;
  /**
   * In plain-text output (no kernel), whether every redraw prints ("live") or only flush() does ("flush"):
   * multi-line widgets printing on every tick would bury a script's log, and would break the progress line's
   * in-place rewriting on a terminal.
   */
  protected textUpdates: "live" | "flush" = "live";

  protected constructor(initial: S, opts: WidgetOptions, defaultRate: number) {
    this.state = initial;
    this.clock = opts.clock ?? systemClock;
    this.displayId = opts.displayId ?? newDisplayId();
    this.throttle = new Throttle(() => this.send(true), opts.maxUpdatesPerSecond ?? defaultRate, this.clock);
  }

  /** The MIME bundle of the current state. */
  abstract bundle(): MimeBundle;

  /** The kernel's rich-display convention: a widget as a cell's last expression renders as its bundle. */
  [JUPYTER_DISPLAY](): MimeBundle {
    return this.bundle();
  }

  /** The text/plain rendering. */
  toString(): string {
    const t = this.bundle()["text/plain"];
    return typeof t === "string" ? t : "";
  }

  /** The current state (read-only view). */
  get value(): Readonly<S> {
    return this.state;
  }

  /** Whether show() was called: only shown widgets send updates. */
  get isShown(): boolean {
    return this.shown;
  }

  /** How many updates went out (not counting show()). */
  get updatesSent(): number {
    return this.throttle.sends;
  }

  /** Displays the widget as a new output tied to its display id; later changes redraw it in place. */
  show(): this {
    this.throttle.cancel();
    this.dirty = false;
    this.shown = true;
    this.send(false);
    return this;
  }

  /** Merges `patch` into the state and schedules a redraw (`flush` sends it at once). */
  update(patch: Partial<S>, opts: { flush?: boolean } = {}): this {
    this.state = { ...this.state, ...patch };
    this.changed(opts.flush);
    return this;
  }

  /** Sends a pending redraw now: call it before the cell ends so the final state is what the notebook keeps. */
  flush(): this {
    if (this.dirty) {
      this.dirty = false;
      this.throttle.request();
    }
    this.throttle.flush();
    return this;
  }

  /** Subclasses call this after changing state. */
  protected changed(flush = false): void {
    if (!this.shown) return;
    if (this.textUpdates === "flush" && displayChannel() === "text") {
      this.dirty = true;
      if (flush) this.flush();
      return;
    }
    this.throttle.request();
    if (flush) this.throttle.flush();
    // a redraw held back by the rate limit goes out when the cell ends, before its idle: a saved notebook
    // (nbconvert stops listening at idle) keeps the final state without the cell calling flush()
    else if (this.throttle.hasPending && !this.flushAtCellEnd) {
      this.flushAtCellEnd = beforeCellEnds(() => {
        this.flushAtCellEnd = false;
        this.flush();
      });
    }
  }

  private send(update: boolean): void {
    try {
      if (update) updateDisplay(this.displayId, this.bundle());
      else display(this.bundle(), { displayId: this.displayId });
    } catch (e) {
      // A redraw may run from a timer: it must never take the training loop down with it.
      if (!this.warned) console.warn(`widget ${this.constructor.name}: display failed: ${(e as Error).message}`);
      this.warned = true;
    }
  }
}
