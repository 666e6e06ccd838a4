// An example killfeed client, written to be copied: it follows solar systems
// over a Subscribe stream in explicit commit mode, prints every killmail,
// commits after processing, and when the stream breaks reconnects with
// exponential backoff and continues from the positions the server keeps for
// its client id. It keeps no state on disk.
//
//   npm ci && npm run build
//   node dist/client.js --url http://127.0.0.1:8080 \
//       --client-id my-tool --systems 30000142,30002187
//
// When the server requires API keys, pass yours with --api-key or the
// KILLFEED_API_KEY environment variable.
//
// Every processed killmail is one line on standard output; what happens to
// the stream (backfill done, reconnects, lost events) is logged on standard
// error. See docs/killfeed_example.md for the guarantees this relies on.

import { parseArgs } from "node:util";
import type { JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { CommitMode, KillfeedService, type Event } from "./gen/killfeed/v1/killfeed_pb.js";

/** What to follow and how to reach killfeed. */
export interface Config {
  /** killfeed's base URL, e.g. "http://127.0.0.1:8080". */
  url: string;
  /**
   * Names this consumer. The server keeps one position per followed system
   * under it: reconnecting with the same id continues after the last commit.
   */
  clientId: string;
  /** The solar system ids to follow. */
  systems: bigint[];
  /** "grpc" (the default) or "connect"; both over HTTP/2. */
  protocol?: "grpc" | "connect";
  /**
   * Sent as "Authorization: Bearer <key>" when set. Servers with
   * authentication on bind each key to a client_id prefix.
   */
  apiKey?: string;
  /** When positive, run() resolves once this many events are processed and committed. */
  maxEvents?: number;
  /**
   * Seconds between heartbeats asked of the server while idle (default 15,
   * 1 to 300). A stream silent for three intervals is treated as dead.
   */
  heartbeatSeconds?: number;
  /** Bounds of the wait before reconnecting (default 500 ms and 30 s). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Receives what happens to the stream. Default: standard error. */
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

/** One processed killmail. */
export interface Kill {
  /** killfeed's id of the event: increasing within a system, unique in the feed. */
  eventId: bigint;
  /** The solar system. */
  systemId: bigint;
  /** ESI's killmail_id. */
  killmailId: number;
  /** zKillboard's zkb.totalValue in ISK, 0 when absent. */
  totalValue: number;
  /** The whole killmail (a google.protobuf.Struct): ESI's killmail with the zkb block. */
  killmail: JsonObject;
}

class Enough extends Error {}
class Silent extends Error {
  constructor() {
    super("no message from the server for three heartbeat intervals");
  }
}
class ProcessError extends Error {}

/**
 * Consumes the feed until `signal` aborts (resolves after committing what was
 * processed), maxEvents have been processed (resolves), `onKill` throws
 * (rejects), the server refuses the request (invalid, unauthenticated, not
 * permitted: rejects), or another consumer subscribes with the same client
 * id (the server ends this stream with aborted: rejects). Every other
 * failure — the connection drops, the service restarts or drains, a rate or
 * stream limit, a commit fails — is retried: run() reconnects with backoff
 * and the server resumes the stream from the last committed positions.
 *
 * `onKill` is called once per event, in order within each system. Events
 * are committed after it returns, one Commit per received batch. A failed
 * commit is retried before resubscribing, so within one run() no event is
 * processed twice; but if the process dies between processing and Commit,
 * the next run receives those events again (at-least-once): process
 * idempotently, keyed by event id or killmail id.
 */
export async function run(cfg: Config, onKill: (k: Kill) => void | Promise<void>, signal: AbortSignal): Promise<void> {
  if (!cfg.clientId || cfg.systems.length === 0) {
    throw new Error("a client id and at least one system are required");
  }
  const log = cfg.log ?? logToStderr;
  const minBackoff = cfg.minBackoffMs ?? 500;
  const maxBackoff = Math.max(cfg.maxBackoffMs ?? 30_000, minBackoff);
  const c = new Consumer(cfg, log, onKill);

  let backoff = minBackoff;
  for (;;) {
    const { delivered, err } = await c.stream(signal);
    if (err instanceof Enough) {
      return;
    }
    if (signal.aborted) {
      return c.shutdown();
    }
    if (superseded(err)) {
      throw new Error(`another consumer subscribed with client id "${cfg.clientId}": ${err.message}`, { cause: err });
    }
    if (!retryable(err)) {
      throw err;
    }
    if (delivered) {
      backoff = minBackoff;
    }
    // Full jitter spreads the reconnects of many clients after an outage.
    const wait = Math.floor(Math.random() * backoff) + 1;
    log("stream ended; reconnecting", { err: String(err), inMs: wait });
    await sleep(wait, signal);
    if (signal.aborted) {
      return c.shutdown();
    }
    backoff = Math.min(2 * backoff, maxBackoff);
  }
}

/**
 * Whether reconnecting may help. A request the server calls invalid or
 * unauthorised will be refused again (and a stream another consumer took
 * over stops before this is asked: see superseded). Everything else
 * (unavailable, resource_exhausted from a limit, a dropped connection, even
 * one reported as aborted) is worth retrying after a backoff.
 */
function retryable(err: unknown): boolean {
  if (err instanceof ProcessError) {
    return false;
  }
  const final = [Code.InvalidArgument, Code.Unauthenticated, Code.PermissionDenied, Code.Unimplemented];
  return !(err instanceof ConnectError && final.includes(err.code));
}

/**
 * Whether the server ended the stream because another consumer subscribed
 * with this client id: aborted, sent by the server. connect-node also
 * reports a connection reset (ECONNRESET) as aborted, with the network
 * error as its cause, and that one is worth retrying like any dropped
 * connection; an error the server sent has no cause.
 */
function superseded(err: unknown): err is ConnectError {
  return err instanceof ConnectError && err.code === Code.Aborted && err.cause === undefined;
}

class Consumer {
  private readonly client: Client<typeof KillfeedService>;
  /** The last processed but not yet committed event per system. */
  private readonly pending = new Map<bigint, bigint>();
  private processed = 0;
  private readonly heartbeatSeconds: number;

  constructor(
    private readonly cfg: Config,
    private readonly log: NonNullable<Config["log"]>,
    private readonly onKill: (k: Kill) => void | Promise<void>,
  ) {
    // Every call carries the API key, when there is one.
    const auth: Interceptor = (next) => (req) => {
      if (cfg.apiKey) {
        req.header.set("Authorization", `Bearer ${cfg.apiKey}`);
      }
      return next(req);
    };
    // Both transports speak HTTP/2: plain-text (h2c) for http://, TLS for https://.
    const transport =
      cfg.protocol === "connect"
        ? createConnectTransport({ baseUrl: cfg.url, httpVersion: "2", interceptors: [auth] })
        : createGrpcTransport({ baseUrl: cfg.url, interceptors: [auth] });
    this.client = createClient(KillfeedService, transport);
    this.heartbeatSeconds = Math.max(1, Math.min(300, Math.floor(cfg.heartbeatSeconds ?? 15)));
  }

  private enough(): boolean {
    return (this.cfg.maxEvents ?? 0) > 0 && this.processed >= (this.cfg.maxEvents ?? 0);
  }

  /**
   * Runs one Subscribe stream until it fails, and returns why and whether the
   * server sent anything (whether the connection worked).
   */
  async stream(signal: AbortSignal): Promise<{ delivered: boolean; err: unknown }> {
    // Commits that failed with the previous connection go first, so the new
    // stream starts exactly after what was processed.
    try {
      await this.commitPending();
    } catch (err) {
      return { delivered: false, err };
    }
    if (this.enough()) {
      return { delivered: false, err: new Enough() };
    }

    // A watchdog aborts a stream that has been silent for three heartbeats:
    // a half-open TCP connection could otherwise hang forever.
    const watchdog = new AbortController();
    const silence = 3 * this.heartbeatSeconds * 1000;
    let timer = setTimeout(() => watchdog.abort(new Silent()), silence);
    let delivered = false;
    try {
      const responses = this.client.subscribe(
        {
          clientId: this.cfg.clientId,
          systemIds: this.cfg.systems,
          commitMode: CommitMode.EXPLICIT,
          heartbeatSeconds: this.heartbeatSeconds,
        },
        { signal: AbortSignal.any([signal, watchdog.signal]) },
      );
      for await (const res of responses) {
        // The silence that counts is the server's, not our processing time.
        clearTimeout(timer);
        if (!delivered) {
          delivered = true;
          this.log("subscribed", { url: this.cfg.url, clientId: this.cfg.clientId, systems: this.cfg.systems.length });
        }
        switch (res.kind.case) {
          case "events":
            await this.handle(res.kind.value.events, signal);
            break;
          case "backfillDone":
            this.log("backfill done; events from now on are live");
            break;
          case "heartbeat":
            break;
          case "gap": {
            // Kafka's retention removed these before this client read them.
            // A tool that must not miss kills could backfill the system from
            // zKillboard here.
            const g = res.kind.value;
            this.log("events lost", {
              system: g.systemId,
              fromEventId: g.fromEventId,
              toEventId: g.toEventId,
              lostEvents: g.lostEvents > 0n ? g.lostEvents : "unknown",
            });
            break;
          }
        }
        timer = setTimeout(() => watchdog.abort(new Silent()), silence);
      }
    } catch (err) {
      return { delivered, err: watchdog.signal.aborted && !signal.aborted ? new Silent() : err };
    } finally {
      clearTimeout(timer);
    }
    return { delivered, err: new Error("the server ended the stream") };
  }

  /** Processes one batch, then commits it: the last event of each system in the batch. */
  private async handle(events: Event[], signal: AbortSignal): Promise<void> {
    let stop: unknown;
    for (const ev of events) {
      if (signal.aborted || this.enough()) {
        break;
      }
      try {
        await this.onKill(toKill(ev));
      } catch (e) {
        stop = new ProcessError(`processing: ${String(e)}`, { cause: e });
        break;
      }
      this.pending.set(ev.systemId, ev.eventId);
      this.processed++;
    }
    try {
      await this.commitPending();
    } catch (e) {
      stop ??= e;
    }
    if (stop === undefined && this.enough()) {
      stop = new Enough();
    }
    if (stop !== undefined) {
      throw stop;
    }
  }

  /** Commits what was processed, so the next run does not see it again. */
  async shutdown(): Promise<void> {
    try {
      await this.commitPending();
    } catch (e) {
      this.log("final commit failed; the next run will see those events again", { err: String(e) });
    }
  }

  /**
   * Commits every processed event not yet committed. It is not tied to the
   * run's signal, so a clean shutdown loses no commit.
   */
  async commitPending(): Promise<void> {
    if (this.pending.size === 0) {
      return;
    }
    const cursors = [...this.pending].map(([systemId, eventId]) => ({ systemId, eventId }));
    await this.client.commit({ clientId: this.cfg.clientId, cursors }, { timeoutMs: 10_000 });
    // Only what was sent: nothing is added while a commit is in flight.
    this.pending.clear();
  }
}

/** Reads the fields this example prints. JSON numbers are exact for ids. */
function toKill(ev: Event): Kill {
  const km: JsonObject = ev.killmail ?? {};
  const zkb = km.zkb as JsonObject | undefined;
  return {
    eventId: ev.eventId,
    systemId: ev.systemId,
    killmailId: Number(km.killmail_id ?? 0),
    totalValue: Number(zkb?.totalValue ?? 0),
    killmail: km,
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

function logToStderr(msg: string, fields?: Record<string, unknown>): void {
  const kv = Object.entries(fields ?? {}).map(([k, v]) => ` ${k}=${String(v)}`);
  console.error(`${new Date().toISOString()} ${msg}${kv.join("")}`);
}

/** Writes 1234567890 as "1.23B ISK". */
function formatISK(v: number): string {
  if (v >= 1e9) return `${(v / 1e9).toFixed(2)}B ISK`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)}M ISK`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(2)}K ISK`;
  return `${v.toFixed(2)} ISK`;
}

function parseSystems(s: string): bigint[] {
  const ids = s
    .split(",")
    .map((f) => f.trim())
    .filter((f) => f !== "");
  if (ids.length === 0 || ids.some((f) => !/^[1-9][0-9]{0,17}$/.test(f))) {
    throw new Error(`--systems: want comma-separated solar system ids, got "${s}"`);
  }
  return ids.map((f) => BigInt(f));
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: "string", default: "http://127.0.0.1:8080" },
      "client-id": { type: "string" },
      systems: { type: "string" },
      protocol: { type: "string", default: "grpc" },
      "max-events": { type: "string", default: "0" },
      "heartbeat-seconds": { type: "string", default: "15" },
      "api-key": { type: "string", default: process.env.KILLFEED_API_KEY },
    },
  });
  const clientId = values["client-id"];
  const protocol = values.protocol;
  const maxEvents = Number(values["max-events"]);
  const heartbeatSeconds = Number(values["heartbeat-seconds"]);
  if (
    !clientId ||
    !values.systems ||
    (protocol !== "grpc" && protocol !== "connect") ||
    !Number.isInteger(maxEvents) ||
    maxEvents < 0 ||
    !Number.isInteger(heartbeatSeconds) ||
    heartbeatSeconds < 1 ||
    heartbeatSeconds > 300
  ) {
    console.error(
      "usage: node dist/client.js --client-id ID --systems 30000142,30002187 [--url http://127.0.0.1:8080] [--protocol grpc|connect] [--max-events N] [--heartbeat-seconds S] [--api-key KEY]",
    );
    process.exit(2);
  }
  const systems = parseSystems(values.systems);

  const stop = new AbortController();
  process.once("SIGINT", () => stop.abort());
  process.once("SIGTERM", () => stop.abort());

  await run(
    {
      url: values.url ?? "",
      clientId,
      systems,
      protocol,
      maxEvents,
      heartbeatSeconds,
      apiKey: values["api-key"],
    },
    (k) => {
      process.stdout.write(`killmail ${k.killmailId} system ${k.systemId} value ${formatISK(k.totalValue)} event ${k.eventId}\n`);
    },
    stop.signal,
  );
  // Idle HTTP/2 sessions may keep the event loop alive: flush and exit.
  await new Promise<void>((resolve) => process.stdout.write("", () => resolve()));
  process.exit(0);
}

main().catch((e: unknown) => {
  console.error("client:", e instanceof Error ? e.message : e);
  process.exit(1);
});
