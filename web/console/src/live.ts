// Live data: every view that shows changing objects subscribes here. A
// subscription opens PM's WatchService stream (a snapshot, then added /
// changed / deleted events, resumed from the last cursor after a cut);
// when PM does not serve the stream (unimplemented, or 404 from a PM that
// predates it) it polls the list call every 2 s instead, and probes the
// stream again now and then, so a PM upgraded underneath an open tab moves
// to the stream without a reload.

import { Code, ConnectError } from "@connectrpc/connect";
import { EventType } from "../../../gen/ts/oaas/pm/v1/watch_service_pb.js";
import { isAbort, problem } from "./api.js";

/** Mode says how the data arrives. */
export type Mode = "connecting" | "stream" | "poll";

/** Snapshot is what a subscriber sees on every change. */
export interface Snapshot<T> {
  items: T[];
  mode: Mode;
  /** error is the last failure, cleared by the next success. */
  error: unknown;
  /** at is when the data was last known current (an event, a heartbeat or a poll). */
  at: Date;
}

/** WatchEvent is the common shape of the WatchService events. */
export interface WatchEvent<T> {
  type: EventType;
  item: T | undefined;
  cursor: string;
}

export interface WatchParams {
  resumeFrom: string;
  key: string;
  heartbeatSeconds: number;
}

/** Source describes one kind of object: how to watch it and how to poll it. */
export interface Source<T> {
  /** name identifies the kind, e.g. "deployments". */
  name: string;
  id(item: T): string;
  watch(params: WatchParams, signal: AbortSignal): AsyncIterable<WatchEvent<T>>;
  poll(signal: AbortSignal): Promise<T[]>;
  /** key narrows the watch to one object (and poll should do the same). */
  key?: string;
  /** keep filters items on the client (streams carry every object). */
  keep?(item: T): boolean;
}

/** Timings are exported so the docs and tests can name them. */
export const POLL_MS = 2000;
const REPROBE_MS = 60_000;
const HEARTBEAT_S = 15;
const MAX_BACKOFF_MS = 10_000;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/** streamMissing reports an error that means "this PM has no such stream". */
function streamMissing(err: unknown): boolean {
  return problem(err) === "unimplemented" || problem(err) === "notfound";
}

/** cursorRejected reports a resume cursor PM no longer knows. */
function cursorRejected(err: unknown): boolean {
  const c = ConnectError.from(err).code;
  return c === Code.OutOfRange || c === Code.FailedPrecondition || c === Code.InvalidArgument;
}

/**
 * subscribe delivers snapshots of src to onChange until the returned
 * function is called. A page leaving for the back/forward cache closes its
 * stream and opens a new one (from a snapshot) when it is shown again: a
 * cached page's open stream would keep its HTTP/1.1 connection, and a few
 * of them exhaust the browser's six per origin, stalling every later page.
 */
export function subscribe<T>(src: Source<T>, onChange: (s: Snapshot<T>) => void): () => void {
  let stopRun: (() => void) | null = run(src, onChange);
  const hide = () => {
    stopRun?.();
    stopRun = null;
  };
  const show = (e: PageTransitionEvent) => {
    if (e.persisted && !stopRun) stopRun = run(src, onChange);
  };
  addEventListener("pagehide", hide);
  addEventListener("pageshow", show);
  return () => {
    removeEventListener("pagehide", hide);
    removeEventListener("pageshow", show);
    hide();
  };
}

function run<T>(src: Source<T>, onChange: (s: Snapshot<T>) => void): () => void {
  const stop = new AbortController();
  const signal = stop.signal;
  let items = new Map<string, T>();
  let mode: Mode = "connecting";
  let error: unknown = null;
  let at = new Date();

  const emit = () => {
    if (signal.aborted) return;
    const list = [...items.values()].filter((x) => (src.keep ? src.keep(x) : true));
    list.sort((a, b) => (src.id(a) < src.id(b) ? -1 : src.id(a) > src.id(b) ? 1 : 0));
    onChange({ items: list, mode, error, at });
  };

  // stream runs one watch until it ends; it returns false when PM has no
  // stream, true when the caller should reconnect.
  let cursor = "";
  const stream = async (): Promise<boolean> => {
    let pending: Map<string, T> | null = cursor ? null : new Map();
    const it = src.watch({ resumeFrom: cursor, key: src.key ?? "", heartbeatSeconds: HEARTBEAT_S }, signal);
    for await (const ev of it) {
      if (ev.cursor) cursor = ev.cursor;
      if (mode !== "stream") {
        mode = "stream";
        error = null;
      }
      at = new Date();
      const id = ev.item ? src.id(ev.item) : "";
      switch (ev.type) {
        case EventType.SNAPSHOT:
          if (ev.item) (pending ??= new Map()).set(id, ev.item);
          break;
        case EventType.SYNCED:
          items = pending ?? new Map();
          pending = null;
          emit();
          break;
        case EventType.ADDED:
        case EventType.CHANGED:
          if (!ev.item) break;
          (pending ?? items).set(id, ev.item);
          if (!pending) emit();
          break;
        case EventType.DELETED:
          if (!ev.item) break;
          (pending ?? items).delete(id);
          if (!pending) emit();
          break;
        case EventType.HEARTBEAT:
          if (!pending) emit();
          break;
      }
    }
    return true;
  };

  const pollOnce = async () => {
    try {
      const list = await src.poll(signal);
      items = new Map(list.map((x) => [src.id(x), x]));
      error = null;
    } catch (err) {
      if (isAbort(err)) return;
      if (src.key && problem(err) === "notfound") {
        items = new Map(); // the one object is gone
        error = null;
      } else {
        error = err;
      }
    }
    at = new Date();
    emit();
  };

  (async () => {
    let backoff = 500;
    while (!signal.aborted) {
      try {
        await stream();
        backoff = 500; // the server ended the stream cleanly: resume soon
        await sleep(backoff, signal);
        continue;
      } catch (err) {
        if (signal.aborted || isAbort(err)) return;
        if (streamMissing(err) || problem(err) === "forbidden") {
          // This PM serves no watch (or not to this role): poll, and probe
          // the stream again later. A list the role may not read shows its
          // own error.
          mode = "poll";
          const until = Date.now() + REPROBE_MS;
          while (!signal.aborted && Date.now() < until) {
            await pollOnce();
            await sleep(POLL_MS, signal);
          }
          continue;
        }
        if (cursorRejected(err) && cursor) {
          cursor = ""; // start over with a fresh snapshot
          continue;
        }
        error = err;
        if (problem(err) === "unauthenticated") {
          emit();
          return; // the sign-in form takes over; a new view subscribes again
        }
        // Cut off (a slow consumer, a restarted PM, the network): keep what
        // we have, say so, and resume after a pause.
        emit();
        await sleep(backoff, signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  })();

  return () => stop.abort();
}

/** every runs fn now and then every ms until stopped: the refresh of data that has no stream. */
export function every(ms: number, fn: (signal: AbortSignal) => Promise<void>): () => void {
  const stop = new AbortController();
  (async () => {
    while (!stop.signal.aborted) {
      await fn(stop.signal);
      await sleep(ms, stop.signal);
    }
  })();
  return () => stop.abort();
}
