/**
 * One physical PostgreSQL session over a `pg` Client.
 *
 * The session tracks what the server is doing with it (statements in flight, the
 * transaction status from ReadyForQuery, an outstanding cancel, a socket error) and owns
 * the release protocol of docs/DESIGN.md §3. Every wait inside the protocol has its own deadline.
 *
 * @internal
 */
import * as Pg from "pg"
import { canCarryBegin, type InnerQuery, WithBegin, WithClose } from "./begin.js"
import { classify, DIRTIES, DROPS_PREPARED, EXPANDS_STAR, RETURNS_ROWS } from "./classify.js"
import type { CancelChannel } from "./control.js"
import {
  backendKey,
  forgetAllParsed,
  forgetParsed,
  isReadyForQuery,
  onReadyForQuery,
  transactionStatus,
  typeParsers
} from "./driver.js"
import { CoreError, type Holder } from "./errors.js"
import { type PoolEvents, tell } from "./events.js"
import type { Place } from "./pool.js"
import {
  type CancelOutcome,
  type ControlTarget,
  cancelTlsOf,
  destroyClient,
  type Endpoint,
  endClient,
  sendCancelRequest,
  type TerminateOutcome,
  terminateBackend
} from "./wire.js"

/** Deadlines of the cleanup steps, in milliseconds. */
export interface Deadlines {
  readonly cancel: number
  readonly drain: number
  readonly rollback: number
  /** Resetting session state a lease changed (C8). */
  readonly reset: number
  readonly terminate: number
}

/** What a session needs to connect and to clean up after itself. */
export interface SessionConfig {
  readonly client: Pg.ClientConfig
  readonly applicationName: string
  readonly connectTimeoutMs: number
  readonly deadlines: Deadlines
  /** Runtime parameters sent in the startup packet (`-c name=value`). */
  readonly startupParameters: ReadonlyArray<readonly [string, string]>
  /** Named prepared statements kept per session (0 = none). */
  readonly statementCacheSize: number
  /**
   * Confirm a cancel whose statement finished first with one probe statement, instead of
   * terminating the session. Sound when the CancelRequest reaches PostgreSQL itself (it closes
   * the cancel socket only after signalling the backend); off for proxies that acknowledge a
   * CancelRequest before forwarding it.
   */
  readonly cancelProbe: boolean
  /** The client's TCP keepalive: the first probe after this long without traffic. */
  readonly keepAliveDelayMs?: number | undefined
  /** The pool's short-lived control connections (out-of-band terminates): their cap and their name. */
  readonly control?: ControlTarget | undefined
  /** Where cancels go first (the pool's control connection); the protocol CancelRequest otherwise. */
  readonly cancelChannel?: CancelChannel | undefined
  /** Reset after every lease, not only after one whose statements may have changed session state. */
  readonly alwaysReset: boolean
  /**
   * The server is PgBouncer in transaction mode: the backend behind the session changes between
   * transactions. Its key and PID are PgBouncer's, so nothing is ended by PID (the socket is closed and
   * PgBouncer drops a server connection that is not idle), and session state belongs to whichever
   * backend ran the statement, so no reset is run (it would land on another backend).
   */
  readonly pgbouncer?: boolean | undefined
  /**
   * libpq's `sslmode=prefer` (TLS first, plain when the server does not offer it) or `allow` (plain first, TLS when
   * the server refuses a plain connection): the second way is tried once when the first is refused for that reason.
   */
  readonly sslFallback?: "prefer" | "allow" | undefined
  /**
   * Runs on every new session before its first use (the user's connect hook). What it sets is the
   * session's baseline, restored by every reset. Aborted through `signal` when connecting fails.
   */
  readonly onConnect?: ((session: Session, signal: AbortSignal) => Promise<void>) | undefined
  /** Who watches the pool (metrics, hooks): see events.ts. */
  readonly events?: PoolEvents | undefined
}

/**
 * The startup packet's `options`: `-c name=value` pairs, with backslash and whitespace escaped as
 * the server splits the string (values such as `search_path` may contain spaces).
 */
const optionsString = (parameters: ReadonlyArray<readonly [string, string]>): string =>
  parameters.map(([name, value]) => `-c ${name}=${value.replace(/[\\\s]/g, (c) => `\\${c}`)}`).join(" ")

const hasParameters = (config: StatementConfig): boolean => config.values !== undefined && config.values.length > 0

/** The results of `BEGIN;` + the user's text, without BEGIN's, in the shape the text alone gives. */
const withoutFirstResult = (result: unknown): unknown => {
  if (!Array.isArray(result)) return result
  const rest = result.slice(1)
  return rest.length === 1 ? rest[0] : rest
}

/** "cached plan must not change result type" and friends: the prepared form is no longer valid. */
const PLAN_INVALID = "0A000"
/** The session's prepared statements are gone on the server (DISCARD ALL, DEALLOCATE ALL). */
const STATEMENT_MISSING = "26000"

/** Returns rows whose columns follow a table's: DDL elsewhere can change its result type. */
const STALE_RESULT = RETURNS_ROWS | EXPANDS_STAR

/** The server refused a named statement because its prepared form is gone or no longer valid. */
const preparedFormInvalid = (error: unknown): boolean => {
  const code = sqlStateOf(error)
  const message = String((error as Error | undefined)?.message ?? "")
  return (
    (code === PLAN_INVALID && /cached plan/i.test(message)) ||
    (code === STATEMENT_MISSING && /prepared statement/i.test(message))
  )
}

/**
 * Brings a session back to what a fresh connection has (DISCARD ALL, spelled out so that it can run
 * in one simple query with the baseline after it: DISCARD ALL itself refuses to run in the implicit
 * transaction of a multi-statement query). RESET ALL returns every parameter to its startup-packet
 * value, so the safety settings survive it.
 */
const RESET_SQL =
  "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; UNLISTEN *; " +
  "SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES"

/** What the connect hook changed, read back so a reset can restore it. */
const BASELINE_SQL =
  "SELECT name, current_setting(name) AS value FROM pg_settings WHERE source = 'session' " +
  "UNION ALL SELECT 'role', current_setting('role') WHERE current_setting('role') <> 'none'"

/**
 * The outcome of releasing a session, counted by the pool:
 * - `reused`: it was clean and goes back to the pool as is;
 * - `rolledBack`: an open transaction was rolled back and the session verified clean;
 * - `reset`: session state the lease may have changed was reset to the baseline (C8), and the
 *   session verified clean (a rollback before it is not counted separately);
 * - `cancelled`: a statement in flight was cancelled (confirmed by 57014) and the session is clean
 *   (whatever else the release did);
 * - `closed`: it was clean and closed gracefully (pool closing, lifetime over);
 * - `terminated`: the socket was destroyed and the backend ended by the server.
 */
export type ReleaseOutcome = "reused" | "rolledBack" | "reset" | "cancelled" | "closed" | "terminated"

/** What the release protocol knows about a session when it chooses its next step. */
export interface ReleaseFacts {
  /** The socket broke or ended. */
  readonly lost: boolean
  /** A cancel was sent whose effect is not confirmed: it may still land on a later statement. */
  readonly cancelUnconfirmed: boolean
  /** A statement of ours has not completed. */
  readonly inFlight: boolean
  /** Nothing in flight and the server's last message was ReadyForQuery. */
  readonly settled: boolean
  /** The transaction status of the last ReadyForQuery. */
  readonly transaction: "I" | "T" | "E" | null
  /** A statement of the lease may have changed session state (C8). */
  readonly stateDirty: boolean
  /** The pool wants the session back (it is not closing, the lease was not revoked, its lifetime is not over). */
  readonly keep: boolean
}

/** One step of the release protocol (docs/DESIGN.md §3). */
export type ReleaseStep = "terminate" | "cancel" | "drain" | "rollback" | "reset" | "keep" | "close"

/**
 * The release protocol's one decision, pure: from the facts, the next step. A session is kept only
 * when nothing is lost, unconfirmed, in flight, unsettled, open or dirty; whatever cannot be
 * brought there is terminated.
 */
export const nextStep = (facts: ReleaseFacts): ReleaseStep => {
  if (facts.lost || facts.cancelUnconfirmed) return "terminate"
  if (facts.inFlight) return "cancel"
  if (!facts.settled) return "drain"
  if (facts.transaction === "T" || facts.transaction === "E") return "rollback"
  if (facts.transaction !== "I") return "terminate"
  if (facts.stateDirty && facts.keep) return "reset"
  return facts.keep ? "keep" : "close"
}

/**
 * Whether a connection attempt failed for the reason `sslmode` `prefer` or `allow` tries the other way: the server
 * does not offer TLS (prefer), or its pg_hba.conf has no entry for an unencrypted connection (allow).
 */
const refusedFor = (fallback: "prefer" | "allow", error: unknown): boolean => {
  const message = String((error as Error | undefined)?.message ?? error)
  return fallback === "prefer"
    ? /does not support SSL/i.test(message)
    : sqlStateOf(error) === "28000" && /no encryption/i.test(message)
}

/** What a statement needs: text, parameters, and optionally array rows. */
export type StatementConfig = Pg.QueryConfig | Pg.QueryArrayConfig

/** A statement submitted by us whose callback has not fired yet. */
export interface InFlight {
  query: object
  done: boolean
  error: unknown
  /** Completes the statement with an error, for one never sent (taken out of the session's queue). */
  fail: ((error: unknown) => void) | undefined
}

const sqlStateOf = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && typeof (error as { code?: unknown }).code === "string"
    ? (error as { code: string }).code
    : undefined

const QUERY_CANCELED = "57014"

/**
 * 57014 raised by a CancelRequest, not by statement_timeout (same SQLSTATE). The server's message
 * is the only difference; with translated messages this is false and the slower path is taken.
 */
const cancelledByUser = (error: unknown): boolean =>
  sqlStateOf(error) === QUERY_CANCELED && /user request/.test(String((error as Error).message))

/**
 * What a prepared statement is cached under: its text, and its parameter types when the statement
 * declares them (the same text with other types is another prepared statement).
 */
const statementKey = (config: StatementConfig): string =>
  Array.isArray(config.types) ? `${config.text}\u0000${config.types.join(",")}` : config.text

/** How long an interrupted statement may take to end by itself before it is cancelled. */
const CANCEL_GRACE_MS = 2

/**
 * The same through PgBouncer, longer: there a cancel that crosses its statement's end inside a transaction costs the
 * server connection (DESIGN.md §10), and a statement's round trip through PgBouncer is longer and more variable.
 */
const BOUNCER_CANCEL_GRACE_MS = 20

/**
 * One statement submitted by a session: pg's own Query, constructed the cheap way (pg copies a
 * config object property by property; a text it just wraps), carrying what the session needs to
 * track it. It is also the record `interrupt` takes.
 */
class TrackedQuery extends Pg.Query implements InFlight {
  declare name: string | undefined
  declare queryMode: "extended" | undefined
  declare text: string
  declare _result: { _types?: unknown }
  query: object = this
  done = false
  error: unknown = undefined
  /** Sent again once, transparently, after its prepared form turned out to be invalid. */
  retried = false
  declare callback: (error: unknown, result: unknown) => void

  constructor(
    readonly session: Session,
    readonly config: StatementConfig,
    name: string | undefined,
    extended: boolean,
    /** Outside any transaction when submitted: a failure had no effect and it may be sent again. */
    readonly autocommit: boolean,
    readonly onDone: (error: unknown, result: unknown) => void
  ) {
    // One super call (compiled class fields follow it): a plain text when nothing else is configured.
    const plain = (config as Pg.QueryArrayConfig).rowMode === undefined && config.types === undefined
    super(
      plain ? config.text : (config as Pg.QueryConfig),
      plain ? (config.values as Array<unknown> | undefined) : undefined
    )
    if (name !== undefined) this.name = name
    if (extended) this.queryMode = "extended"
    this.callback = trackedDone
  }

  fail(error: unknown): void {
    this.callback(error, undefined)
  }
}

/** pg calls `query.callback(error, result)` once; shared by every TrackedQuery, so no closure per statement. */
function trackedDone(this: TrackedQuery, error: unknown, result: unknown): void {
  if (this.done) return
  if (error && this.name !== undefined && this.session.retryPrepared(this, error)) return
  this.done = true
  this.error = error
  this.session.completed(this)
  this.onDone(error, result)
}

export class Session {
  /** Where the session is in its pool; changed only by `Pool.move`. */
  place: Place = "new"
  readonly client: Pg.Client
  readonly config: SessionConfig
  endpoint: Endpoint
  pid = 0
  secretKey = 0
  readonly createdAt = Date.now()
  /** Set by the pool: when the session must be retired (max lifetime with jitter). */
  expiresAt = Number.POSITIVE_INFINITY
  idleSince = Date.now()
  /** Pool bookkeeping of the current lease (see `Member`). */
  leasedAt = 0
  validatedAt = 0
  holder: Holder | undefined = undefined
  leakReported = false
  /** The socket error or end that made this session unusable. */
  lost: unknown = undefined
  /** Set when the pool takes the session away from its borrower (shutdown): new statements are refused. */
  revoked: string | undefined = undefined
  /** A CancelRequest was sent and its effect is not confirmed: never hand this session to anyone else. */
  cancelUnconfirmed = false
  /** A statement was cancelled during the current lease (for counting). */
  cancelledDuringLease = false
  /**
   * The server's `pg_backend_pid()` equals the PID of BackendKeyData: cancels may go through the
   * cancel channel. False behind proxies that hand out keys of their own (PgBouncer).
   */
  pidVerified = false
  /** A deadline expired: the network or the backend may not be answering. */
  unresponsive = false
  /** Called once when the session becomes unusable (socket error or end). */
  onLost: ((session: Session) => void) | undefined = undefined
  /** Every statement of ours that has not completed: queued or on the wire. */
  private readonly inFlight: Array<InFlight> = []
  /** Statements not handed to pg yet, in order. */
  private readonly queue: Array<InFlight> = []
  /** The statement pg has, if any. */
  private onWire: InFlight | undefined = undefined
  /**
   * A transaction was opened lazily: BEGIN travels with the next statement (see begin.ts).
   * Reset at the end of every lease.
   */
  beginPending = false
  /**
   * A statement of the current lease may have changed session state that outlives its transaction
   * (C8): the release resets the session before anyone else gets it.
   */
  stateDirty = false
  /** The statements prepared on this session, text to name (bounded by `statementCacheSize`). */
  private readonly prepared = new Map<string, string>()
  /** Names are per session, so sessions of different pools or servers can never mix them up. */
  private nextStatementName = 1
  /** `set_config` calls that restore what the connect hook set; empty without a hook. */
  private baseline = ""
  private settleWaiters: Array<() => void> = []
  private releasing: Promise<ReleaseOutcome> | undefined = undefined
  /** Set once the session is being closed or terminated: both happen at most once. */
  private ending: Promise<void> | undefined = undefined

  private constructor(client: Pg.Client, config: SessionConfig) {
    this.client = client
    this.config = config
    this.endpoint = { host: client.host, port: client.port }
  }

  /**
   * Opens a session. The returned function aborts a connection attempt that has not
   * finished yet: the half-made socket is destroyed and `onDone` is called with an error.
   */
  static connect(config: SessionConfig, onDone: (error: unknown, session?: Session) => void): () => void {
    const fallback = config.sslFallback
    if (fallback === undefined) return Session.connectOnce(config, onDone)
    let aborted = false
    // The way that worked is remembered for the pool's control connections (they connect after a session did).
    const negotiated = config.control?.negotiated
    let abort = Session.connectOnce(config, (error, session) => {
      if (error === undefined || aborted || !refusedFor(fallback, error)) {
        if (error === undefined && negotiated !== undefined) negotiated.ssl = config.client.ssl ?? false
        return onDone(error, session)
      }
      const ssl: Pg.ClientConfig["ssl"] = fallback === "prefer" ? false : { rejectUnauthorized: false }
      abort = Session.connectOnce({ ...config, client: { ...config.client, ssl } }, (error, session) => {
        if (error === undefined && negotiated !== undefined) negotiated.ssl = ssl
        onDone(error, session)
      })
    })
    return () => {
      aborted = true
      abort()
    }
  }

  private static connectOnce(config: SessionConfig, onDone: (error: unknown, session?: Session) => void): () => void {
    const client = new Pg.Client({
      ...config.client,
      application_name: config.applicationName,
      connectionTimeoutMillis: config.connectTimeoutMs,
      keepAlive: true,
      keepAliveInitialDelayMillis: config.keepAliveDelayMs ?? 30_000,
      ...(config.startupParameters.length > 0 ? { options: optionsString(config.startupParameters) } : {})
    })
    let done = false
    const session = new Session(client, config)
    const hookAbort = new AbortController()
    // A driver 'error' event must never become an uncaught exception.
    client.on("error", (error) => session.markLost(error))
    client.on("end", () => session.markLost(new Error("Connection ended")))
    const finish = (error: unknown) => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (error) {
        hookAbort.abort()
        destroyClient(client)
        onDone(error)
        return
      }
      onDone(undefined, session)
    }
    // pg's own connection timeout only covers part of the handshake; this one covers all of it.
    const timer = setTimeout(
      () => finish(new Error(`Connection timed out after ${config.connectTimeoutMs} ms`)),
      config.connectTimeoutMs
    )
    // The connect hook, then the baseline it leaves; both inside the connect deadline.
    const prepareSession = () => {
      if (config.onConnect === undefined) return finish(undefined)
      config.onConnect(session, hookAbort.signal).then(
        () => {
          if (done) return
          session.stateDirty = false
          session.captureBaseline((error) => finish(error))
        },
        (error) => finish(error ?? new Error("The connect hook failed"))
      )
    }
    try {
      client.connect((error) => {
        if (error) return finish(error)
        const key = backendKey(client)
        session.pid = key.pid
        session.secretKey = key.secretKey
        // A session over TLS sends its cancels over TLS too, with the same options.
        session.endpoint = {
          host: client.host,
          port: client.port,
          tls: cancelTlsOf(client)
        }
        onReadyForQuery(client, () => {
          session.notifySettled()
          session.pump()
        })
        // pg calls back from inside its ReadyForQuery handler and marks the client ready only after
        // that: a statement submitted now would wait for a ReadyForQuery that never comes.
        if (config.cancelChannel === undefined) return queueMicrotask(prepareSession)
        client.query("SELECT pg_backend_pid() AS pid", (error: unknown, result: Pg.QueryResult) => {
          session.pidVerified = !error && Number(result.rows[0]?.pid) === session.pid
          prepareSession()
        })
      })
    } catch (error) {
      finish(error)
    }
    return () => {
      hookAbort.abort()
      finish(new Error("Connection attempt aborted"))
    }
  }

  /** Reads back the settings the connect hook changed, as the statement that restores them. */
  private captureBaseline(onDone: (error: unknown) => void): void {
    this.client.query(BASELINE_SQL, (error: unknown, result: Pg.QueryResult) => {
      if (error) return onDone(error)
      this.baseline = result.rows
        .map((row) => `SELECT set_config(${Pg.escapeLiteral(row.name)}, ${Pg.escapeLiteral(row.value)}, false)`)
        .join("; ")
      onDone(undefined)
    })
  }

  /** True when no statement of ours is pending and the server sent ReadyForQuery. */
  get settled(): boolean {
    return this.inFlight.length === 0 && isReadyForQuery(this.client)
  }

  get transactionStatus(): "I" | "T" | "E" | null {
    return transactionStatus(this.client)
  }

  /**
   * Clean on the server and on the wire: no statement, no transaction, no unconfirmed cancel, no
   * error, and no session state changed since the baseline.
   */
  get clean(): boolean {
    return (
      this.lost === undefined &&
      !this.cancelUnconfirmed &&
      !this.stateDirty &&
      this.settled &&
      transactionStatus(this.client) === "I"
    )
  }

  markLost(error: unknown): void {
    if (this.lost !== undefined) return
    this.lost = error
    // pg fails what it has; what is still in the session's own queue never will be sent.
    for (const record of this.queue.splice(0)) {
      if (record.fail !== undefined) record.fail(error)
      else this.finishTracked(record, error)
    }
    this.notifySettled()
    this.onLost?.(this)
  }

  private notifySettled(): void {
    if (this.settleWaiters.length === 0) return
    const waiters = this.settleWaiters
    this.settleWaiters = []
    for (const wake of waiters) wake()
  }

  /** Waits until the session is settled (true) or lost, or the deadline passes (false). */
  whenSettled(timeoutMs: number, markUnresponsive = true): Promise<boolean> {
    if (this.settled || this.lost !== undefined) return Promise.resolve(this.settled && this.lost === undefined)
    return new Promise((resolve) => {
      let finished = false
      const check = () => {
        if (finished) return
        if (this.settled || this.lost !== undefined) {
          finished = true
          clearTimeout(timer)
          resolve(this.settled && this.lost === undefined)
        } else {
          this.settleWaiters.push(check)
        }
      }
      const timer = setTimeout(() => {
        if (finished) return
        finished = true
        if (markUnresponsive) this.unresponsive = true
        resolve(false)
      }, timeoutMs)
      this.settleWaiters.push(check)
    })
  }

  /**
   * Submits one statement; `callback` fires once with its outcome. Returns the record that
   * `interrupt` takes. A refused or unserializable statement fails through the callback.
   * `cleanup` marks the release protocol's own statements: they bypass a revocation and are not
   * classified.
   */
  submit(config: StatementConfig, callback: (error: unknown, result: unknown) => void, cleanup = false): InFlight {
    const refusal = this.refusal(cleanup)
    if (refusal !== undefined) {
      callback(refusal, undefined)
      return { query: config, done: true, error: refusal, fail: undefined }
    }
    const begin = this.beginPending
    this.beginPending = false
    const autocommit = !begin && transactionStatus(this.client) === "I"
    const kind = cleanup ? 0 : this.note(config.text)
    let record: TrackedQuery | undefined
    try {
      if (begin && !hasParameters(config) && !canCarryBegin(config.text)) {
        // Several statements in one simple query: BEGIN goes first in the same string, so it
        // still costs no round trip, and an error in it skips the rest.
        record = new TrackedQuery(
          this,
          { ...config, text: `BEGIN;\n${config.text}` },
          undefined,
          false,
          false,
          (error, result) => callback(error, error ? result : withoutFirstResult(result))
        )
      } else {
        // In a transaction, a statement whose result columns follow a table's (`SELECT *`, `RETURNING *`)
        // runs unnamed: after ALTER TABLE ADD COLUMN elsewhere its prepared form would fail with 0A000,
        // which aborts the whole transaction and cannot be retried there.
        const name = autocommit || (kind & STALE_RESULT) !== STALE_RESULT ? this.prepare(config) : undefined
        record = new TrackedQuery(this, config, name, begin, autocommit, callback)
      }
      this.inFlight.push(record)
      this.send(record, begin)
    } catch (error) {
      // pg's Query throws synchronously for a malformed statement config.
      if (record === undefined) {
        callback(error, undefined)
        return { query: config, done: true, error, fail: undefined }
      }
      record.fail(error)
    }
    return record
  }

  /**
   * Records what a statement the user runs on this session may do: whether it may change session
   * state (the release then resets it) or drop the session's prepared statements (the cache forgets
   * them now, so nothing later fails on a name the server no longer has). Returns the statement's
   * classification.
   */
  note(text: string): number {
    const kind = classify(text)
    if (((kind & DIRTIES) !== 0 || this.config.alwaysReset) && this.config.pgbouncer !== true) this.stateDirty = true
    if ((kind & DROPS_PREPARED) !== 0) this.forgetAllPrepared()
    return kind
  }

  /**
   * Queues a statement for the wire, behind BEGIN (one Sync group) when the transaction starts with
   * it, or behind a Close when it is prepared again. `owner` is the record its caller holds.
   */
  private send(record: TrackedQuery, begin: boolean, prefix?: "close", owner: InFlight = record): void {
    const wrap = begin && record.queryMode === "extended" ? WithBegin : prefix === "close" ? WithClose : undefined
    if (wrap === undefined) {
      owner.query = record
    } else {
      // pg sets the type parsers on the object it is given; here that is the wrapper.
      record._result._types ??= typeParsers(this.client)
      owner.query = new wrap(record as unknown as InnerQuery)
    }
    if (prefix === "close") this.queue.unshift(owner)
    else this.queue.push(owner)
    this.pump()
  }

  /**
   * The session's own statement queue: one statement on the wire at a time, the next handed to pg
   * only once pg is ready for it (after the previous one's ReadyForQuery), so pg's own queue, which
   * pg deprecates, is never used and a statement not sent yet is always ours to take back.
   */
  pump(): void {
    if (this.onWire !== undefined || this.queue.length === 0 || this.lost !== undefined) return
    if (!isReadyForQuery(this.client)) return
    const next = this.queue.shift()!
    this.onWire = next
    try {
      this.client.query(next.query as Pg.Submittable)
    } catch (error) {
      // pg throws synchronously for some bad inputs (a value it cannot serialize).
      this.onWire = undefined
      if (next.fail !== undefined) next.fail(error)
      else this.finishTracked(next, error)
    }
  }

  /** @internal used by TrackedQuery when its statement ends */
  completed(record: TrackedQuery): void {
    this.forget(record)
  }

  private finishTracked(record: InFlight, error: unknown): void {
    if (record.done) return
    record.done = true
    record.error = error
    this.forget(record)
  }

  /**
   * A named statement failed because its prepared form is gone (DISCARD, DEALLOCATE) or no longer
   * valid (DDL changed its result type). Outside a transaction the server rejected it before it did
   * anything, so it is prepared again under the same name (Close, then Parse, in one group) and sent
   * once more; its caller sees only the second outcome. Inside a transaction the failure has aborted
   * the transaction, so it is reported, and the name forgotten so the next use prepares afresh.
   * Returns true when the statement was sent again.
   */
  retryPrepared(record: TrackedQuery, error: unknown): boolean {
    if (!preparedFormInvalid(error)) return false
    const name = record.name!
    forgetParsed(this.client, name)
    if (record.retried || !record.autocommit || this.lost !== undefined || this.revoked !== undefined) {
      // Not sent again: the next use prepares afresh, under a new name.
      this.prepared.delete(statementKey(record.config))
      return false
    }
    const retry = new TrackedQuery(this, record.config, name, false, true, (error, result) => {
      trackedDone.call(record, error, result)
    })
    retry.retried = true
    record.retried = true
    // The record the caller holds now stands for the retry (first in the queue, sent after the
    // failed attempt's ReadyForQuery): interrupting it reaches this one.
    if (this.onWire === record) this.onWire = undefined
    this.send(retry, false, "close", record)
    return true
  }

  /**
   * The name to prepare a parameterised statement under, if the session's cache has room.
   * Statements without parameters run with the simple protocol, which is cheaper for them.
   */
  private prepare(config: StatementConfig): string | undefined {
    if (this.config.statementCacheSize === 0 || config.values === undefined || config.values.length === 0) {
      return undefined
    }
    const key = statementKey(config)
    const known = this.prepared.get(key)
    if (known !== undefined || this.prepared.size >= this.config.statementCacheSize) return known
    const name = `warden_${this.nextStatementName++}`
    this.prepared.set(key, name)
    return name
  }

  /** The server has dropped, or may have dropped, every prepared statement of this session. */
  private forgetAllPrepared(): void {
    this.prepared.clear()
    forgetAllParsed(this.client)
  }

  /** The text of the statement on the wire, if any (for the pool's holder reports). */
  running(): string | undefined {
    const onWire = this.onWire
    if (onWire === undefined) return undefined
    // A statement sent behind BEGIN or a Close is wrapped (begin.ts): its text is the inner one's.
    const query = onWire.query as { text?: unknown; inner?: { text?: unknown } } | undefined
    const text = query?.text ?? query?.inner?.text
    return typeof text === "string" ? text : undefined
  }

  /** Why a new statement is refused, if it is. */
  refusal(cleanup = false): CoreError | undefined {
    // A revoked session refuses the borrower's statements, not the release protocol's own.
    if (this.revoked !== undefined && !cleanup) return new CoreError("Refused", this.revoked)
    if (this.lost !== undefined) {
      return new CoreError("Refused", "Connection lost: the session can no longer be used", this.lost)
    }
    return undefined
  }

  private forget(record: InFlight): void {
    const index = this.inFlight.indexOf(record)
    if (index >= 0) this.inFlight.splice(index, 1)
    if (this.onWire === record) this.onWire = undefined
    else this.unqueue(record)
    this.notifySettled()
    this.pump()
  }

  /**
   * Sends a submittable of someone else's (a cursor) through the session's queue and tracks it
   * until `done` is called.
   */
  sendTracked(query: object): { done: (error?: unknown) => void } {
    const record: InFlight = { query, done: false, error: undefined, fail: undefined }
    this.inFlight.push(record)
    this.queue.push(record)
    this.pump()
    return { done: (error?: unknown) => this.finishTracked(record, error) }
  }

  /** Takes a statement that is not on the wire yet out of the session's queue. */
  private unqueue(record: InFlight): boolean {
    const index = this.queue.indexOf(record)
    if (index < 0) return false
    this.queue.splice(index, 1)
    return true
  }

  /**
   * Interruption of one statement: drop it if pg has not sent it yet, otherwise cancel it
   * on the server. Never throws; always finishes within the cleanup deadlines.
   */
  async interrupt(record: InFlight): Promise<void> {
    if (record.done) return
    if (this.unqueue(record)) {
      record.done = true
      this.forget(record)
      return
    }
    if (!(await this.cancelInFlight())) await this.terminate()
  }

  /**
   * Statements in the session's queue (not sent yet) are taken out and failed, so that a fiber
   * still waiting for one gets an error instead of waiting forever.
   */
  private dropQueued(): void {
    for (const record of this.inFlight.slice()) {
      if (!this.unqueue(record)) continue
      if (record.fail !== undefined) {
        record.fail(new Error("Statement not sent: its connection was released"))
      } else {
        record.done = true
        this.forget(record)
      }
    }
  }

  /**
   * Cancels whatever statement is running and waits for it to settle. Returns true when
   * the cancel is confirmed (the statement ended with 57014, or nothing was running) and the
   * session is settled. A statement that completed while the cancel was on its way means the
   * signal may still land on a later statement: that is not confirmed.
   */
  private async cancelInFlight(): Promise<boolean> {
    if (this.lost !== undefined) return false
    const target = this.onWire ?? this.inFlight[0]
    if (target === undefined) return this.whenSettled(this.config.deadlines.drain)
    // Most statements take well under a millisecond: one that ends by itself within a short grace
    // needs no cancel at all (and so no confirmation). Taken out of the drain deadline.
    const grace = Math.min(
      this.config.pgbouncer === true ? BOUNCER_CANCEL_GRACE_MS : CANCEL_GRACE_MS,
      this.config.deadlines.drain / 2
    )
    if (await this.whenSettled(grace, false)) return true
    this.cancelUnconfirmed = true
    this.cancelledDuringLease = true
    const sent = this.sendCancel()
    // The server closes the cancel socket only when its helper process exits, often well after the
    // backend was signalled. A statement that ends with "canceling statement due to user request"
    // has consumed our signal already: that confirms the cancel without waiting for the close.
    const confirmedEarly = await Promise.race([
      sent.then(() => false),
      this.whenSettled(this.config.deadlines.cancel, false).then(
        (settled) => settled && target.done && cancelledByUser(target.error)
      )
    ])
    if (confirmedEarly) {
      this.cancelUnconfirmed = false
      return true
    }
    const delivery: CancelOutcome = await sent
    if (delivery !== "delivered") {
      this.unresponsive = true
      return false
    }
    const drain = this.config.deadlines.drain - grace
    const deadline = Date.now() + drain
    const settled = await this.whenSettled(drain)
    if (!settled) return false
    if (target.done && sqlStateOf(target.error) === QUERY_CANCELED) {
      this.cancelUnconfirmed = false
      return true
    }
    if (this.config.pgbouncer === true && this.transactionStatus === "I") {
      // Through PgBouncer the statement ended outside a transaction, so PgBouncer has taken its backend back: a cancel
      // still on its way lands on that backend, whoever runs there next, and ending this session would not stop it
      // (DESIGN.md §10). Inside a transaction the backend is still ours, and terminating it (below) is what keeps the
      // cancel from reaching anyone.
      this.cancelUnconfirmed = false
      return true
    }
    if (!this.config.cancelProbe) return false
    // The statement finished before the cancel reached it. The server closes the cancel socket
    // only after it has signalled the backend, and a backend consumes a pending cancel at the
    // next command it reads: either it ignores it while reading, or that command fails with
    // 57014. One probe on this session, before anyone else can have it, settles which.
    if (!(await this.probe(Math.max(0, deadline - Date.now())))) return false
    this.cancelUnconfirmed = false
    return true
  }

  /**
   * Signals the backend: through the pool's cancel channel when it is open and this session's PID
   * is the server's, otherwise (or when the channel fails) with a protocol CancelRequest.
   */
  private async sendCancel(): Promise<CancelOutcome> {
    const deadline = Date.now() + this.config.deadlines.cancel
    const channel = this.pidVerified ? this.config.cancelChannel : undefined
    // The channel gets half the deadline: if it is what does not answer (its own backend stuck), the
    // protocol CancelRequest still has time to reach the session's backend.
    const viaChannel = channel?.cancel(this.pid, this.config.applicationName, this.config.deadlines.cancel / 2)
    const events = this.config.events
    if (viaChannel !== undefined) {
      const outcome = await viaChannel
      if (events !== undefined) tell(events.cancelSent, "channel", outcome)
      // Otherwise the channel broke or timed out, or the backend no longer shows our name (SET application_name).
      if (outcome === "delivered") return outcome
    }
    const outcome = await sendCancelRequest(this.endpoint, this.pid, this.secretKey, Math.max(1, deadline - Date.now()))
    if (events !== undefined) tell(events.cancelSent, "protocol", outcome)
    return outcome
  }

  /**
   * Whether a session that sat idle still answers: `SELECT 1` within `timeoutMs`, and the session
   * settled idle afterwards. One round trip; used before a long-idle session is handed out.
   */
  validate(timeoutMs: number): Promise<boolean> {
    if (this.lost !== undefined) return Promise.resolve(false)
    return this.runBounded("SELECT 1", timeoutMs, (error) => !error).then(
      (answered) => answered && this.clean,
      () => false
    )
  }

  /** `SELECT 1` within the deadline: true when it ended (or was cancelled) and the session settled idle. */
  private probe(timeoutMs: number): Promise<boolean> {
    return this.runBounded("SELECT 1", timeoutMs, (error) => !error || sqlStateOf(error) === QUERY_CANCELED)
  }

  /**
   * One cleanup statement within one deadline: true when `accept` takes its outcome and the
   * session is settled (ReadyForQuery received) before the deadline passes.
   */
  async runBounded(text: string, timeoutMs: number, accept: (error: unknown) => boolean): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    const answered = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        this.unresponsive = true
        resolve(false)
      }, timeoutMs)
      this.submit(
        { text },
        (error) => {
          clearTimeout(timer)
          resolve(accept(error))
        },
        true
      )
    })
    return answered && (await this.whenSettled(Math.max(0, deadline - Date.now())))
  }

  /**
   * Forced end: destroy the socket (cannot hang), then, if the backend may still be running
   * a statement or may not have noticed, end it from the server side over a control
   * connection within the terminate deadline. When even that cannot reach the server, the
   * session parameters set at startup (TCP keepalive, client_connection_check_interval,
   * idle_in_transaction_session_timeout) make the server reap it.
   */
  terminate(): Promise<void> {
    this.ending ??= this.forceEnd()
    return this.ending
  }

  private async forceEnd(): Promise<void> {
    // The backend may still be busy, or may not hear about the socket, when a statement was in
    // flight or a deadline expired; an idle backend ends by itself when its socket closes.
    const mayStillRun = !this.settled || this.unresponsive
    this.revoked ??= "Connection terminated by pg-warden"
    this.markLost(new Error("Connection terminated by pg-warden"))
    destroyClient(this.client)
    const ending = mayStillRun ? this.terminateByPid() : undefined
    if (ending !== undefined) tell(this.config.events?.terminated, await ending)
  }

  /**
   * The pool's last resort when a cleanup overran its outer deadline: the socket is destroyed now and
   * the backend ended out of band, not waited for (that control connection has its own deadline).
   */
  abort(): void {
    this.revoked ??= "Connection aborted by pg-warden"
    this.markLost(new Error("Connection aborted by pg-warden"))
    destroyClient(this.client)
    this.ending ??= Promise.resolve()
    // Whatever overran may have left the backend busy; a backend already gone is simply not found.
    void this.terminateByPid()
  }

  /**
   * `pg_terminate_backend` of this session's backend over a control connection, within the terminate deadline;
   * `undefined` when there is no PID to end by (not connected, or behind PgBouncer, whose PIDs are its own).
   */
  private terminateByPid(): Promise<TerminateOutcome> | undefined {
    if (this.pid === 0 || this.config.pgbouncer === true) return undefined
    return terminateBackend(
      this.config.client,
      this.pid,
      this.config.applicationName,
      this.config.deadlines.terminate,
      this.config.control
    )
  }

  /** Graceful close of a clean session: Terminate message, then wait for the socket to end. */
  close(): Promise<void> {
    this.ending ??= this.gracefulEnd()
    return this.ending
  }

  private async gracefulEnd(): Promise<void> {
    this.revoked ??= "Connection closed"
    if (this.lost !== undefined) {
      destroyClient(this.client)
      return
    }
    await endClient(this.client, this.config.deadlines.terminate)
  }

  /** ROLLBACK within the rollback deadline; true when the session is verified idle afterwards. */
  private async rollback(): Promise<boolean> {
    return (
      (await this.runBounded("ROLLBACK", this.config.deadlines.rollback, (error) => !error)) &&
      this.transactionStatus === "I"
    )
  }

  /**
   * Session state back to the baseline (C8) within the reset deadline, in one round trip. The
   * server drops every prepared statement with it, so the cache is emptied whatever the outcome.
   */
  private async reset(): Promise<boolean> {
    const text = this.baseline === "" ? RESET_SQL : `${RESET_SQL}; ${this.baseline}`
    const done = await this.runBounded(text, this.config.deadlines.reset, (error) => !error)
    this.forgetAllPrepared()
    if (!done || this.transactionStatus !== "I") return false
    this.stateDirty = false
    return true
  }

  /**
   * The release protocol (DESIGN.md §3). Runs at most once per lease: a second caller (the
   * pool shutting down while the borrower releases) gets the same outcome.
   * `keep` says whether a clean session may be kept (false when closing or expired).
   */
  release(keep: () => boolean): Promise<ReleaseOutcome> {
    this.releasing ??= this.runRelease(keep).finally(() => {
      this.releasing = undefined
    })
    return this.releasing
  }

  /** What the release protocol decides from, read off the session now. */
  private facts(keep: boolean): ReleaseFacts {
    return {
      lost: this.lost !== undefined,
      cancelUnconfirmed: this.cancelUnconfirmed,
      inFlight: this.inFlight.length > 0,
      settled: this.settled,
      transaction: this.transactionStatus,
      stateDirty: this.stateDirty,
      keep
    }
  }

  /**
   * Runs the steps `nextStep` chooses until the session is kept, closed or terminated. Each step
   * runs at most once: one that is chosen again did not achieve what it was for, and the session is
   * terminated.
   */
  private async runRelease(keep: () => boolean): Promise<ReleaseOutcome> {
    this.beginPending = false
    let outcome: ReleaseOutcome = "reused"
    const done = new Set<ReleaseStep>()
    try {
      // What pg has not sent yet is dropped (its fibers get an error), whatever happens next.
      this.dropQueued()
      for (;;) {
        const step = nextStep(this.facts(keep()))
        if (done.has(step)) return await this.terminated()
        done.add(step)
        switch (step) {
          case "terminate":
            return await this.terminated()
          case "cancel":
            if (!(await this.timed("cancel", this.cancelInFlight()))) return await this.terminated()
            outcome = "cancelled"
            break
          case "drain":
            if (!(await this.timed("drain", this.whenSettled(this.config.deadlines.drain))))
              return await this.terminated()
            break
          case "rollback":
            if (!(await this.timed("rollback", this.rollback()))) return await this.terminated()
            if (outcome === "reused") outcome = "rolledBack"
            break
          case "reset":
            if (!(await this.timed("reset", this.reset()))) return await this.terminated()
            if (outcome !== "cancelled") outcome = "reset"
            break
          case "keep": {
            const cancelled = this.cancelledDuringLease
            this.cancelledDuringLease = false
            return cancelled ? "cancelled" : outcome
          }
          case "close":
            // Closed anyway: its session state goes with it, no reset needed.
            this.stateDirty = false
            this.cancelledDuringLease = false
            await this.timed("close", this.close())
            return "closed"
        }
      }
    } catch {
      return await this.terminated()
    }
  }

  private async terminated(): Promise<ReleaseOutcome> {
    await this.timed("terminate", this.terminate())
    return "terminated"
  }

  /** A release step's work, its duration told to `events.cleanupStep` (for the metrics). */
  private async timed<A>(step: ReleaseStep, work: Promise<A>): Promise<A> {
    const events = this.config.events
    if (events?.cleanupStep === undefined) return work
    const started = Date.now()
    try {
      return await work
    } finally {
      tell(events.cleanupStep, step, Date.now() - started)
    }
  }
}
