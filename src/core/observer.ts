/**
 * The server's own view of a pool, read from outside it: one plain `pg` session (never a pool
 * slot) that reads `pg_stat_activity`, waits for a condition on it, and ends leftovers. The tests,
 * the benchmark and the `pg-warden` command line all observe the server through this class, and the
 * audit reads the same columns with the same query.
 *
 * @internal
 */
import * as Pg from "pg"
import { backendKey } from "./driver.js"
import { type CancelOutcome, cancelTlsOf, endClient, sendCancelRequest } from "./wire.js"

/** A backend as `pg_stat_activity` shows it. */
export interface Backend {
  readonly pid: number
  /** `active`, `idle`, `idle in transaction`, `idle in transaction (aborted)`, … or null. */
  readonly state: string | null
  /** The statement running, or the last one that ran. */
  readonly query: string
  readonly xactStart: Date | null
  readonly stateChange: Date | null
  readonly waitEventType: string | null
  readonly backendType: string
  /** The backend's `application_name` now. */
  readonly applicationName: string
}

/** Counts of backends by state (`idle in transaction (aborted)` counts as idle in transaction). */
export interface StateCounts {
  readonly total: number
  readonly active: number
  readonly idle: number
  readonly idleInTransaction: number
  readonly other: number
}

/** How {@link Observer.waitFor} polls. */
export interface WaitOptions {
  /** Default 10 s. */
  readonly timeoutMs?: number
  /** Default 20 ms. */
  readonly intervalMs?: number
  /** Says what was awaited, in the error thrown when it never held. */
  readonly message?: string
}

/** The backends of one `application_name`, the observer's own session left out. */
const BACKEND_COLUMNS = "pid, state, query, xact_start, state_change, wait_event_type, backend_type, application_name"

export const BACKENDS_SQL = `SELECT ${BACKEND_COLUMNS}
  FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid() ORDER BY backend_start, pid`

/** The backends of an application name, and those with the PIDs `$2` whatever their name now. */
export const BACKENDS_BY_NAME_OR_PID_SQL = `SELECT ${BACKEND_COLUMNS}
  FROM pg_stat_activity WHERE (application_name = $1 OR pid = ANY($2::int[])) AND pid <> pg_backend_pid()
  ORDER BY backend_start, pid`

interface BackendRow {
  readonly pid: number
  readonly state: string | null
  readonly query: string | null
  readonly xact_start: Date | null
  readonly state_change: Date | null
  readonly wait_event_type: string | null
  readonly backend_type: string | null
  readonly application_name?: string | null
}

/** One row of {@link BACKENDS_SQL} as a {@link Backend}. */
export const toBackend = (row: BackendRow): Backend => ({
  pid: Number(row.pid),
  state: row.state,
  query: row.query ?? "",
  xactStart: row.xact_start,
  stateChange: row.state_change,
  waitEventType: row.wait_event_type,
  backendType: row.backend_type ?? "",
  applicationName: row.application_name ?? ""
})

export const countStates = (backends: ReadonlyArray<Backend>): StateCounts => {
  let active = 0
  let idle = 0
  let idleInTransaction = 0
  let other = 0
  for (const b of backends) {
    if (b.state === "active") active++
    else if (b.state === "idle") idle++
    else if (b.state?.startsWith("idle in transaction")) idleInTransaction++
    else other++
  }
  return { total: backends.length, active, idle, idleInTransaction, other }
}

/** True for a backend running a statement whose text contains `fragment`. */
export const runs =
  (fragment: string) =>
  (b: Backend): boolean =>
    b.state === "active" && b.query.includes(fragment)

/** True for a backend sitting in an open transaction (aborted or not). */
export const inTransaction = (b: Backend): boolean => b.state?.startsWith("idle in transaction") === true

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const describe = (value: unknown): string => {
  if (value instanceof Error) return value.message
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/** The observer's `application_name` unless told otherwise. */
export const OBSERVER_APPLICATION_NAME = "pg-warden-observer"

/** What {@link Observer.connect} takes besides the server. */
export interface ObserverOptions {
  /** The observer's own `application_name`, so it can be told apart from what it observes. */
  readonly applicationName: string
  /** Default 10 s. */
  readonly connectTimeoutMs?: number
}

export class Observer {
  /** Errors the session reported asynchronously (the server went away, …), kept for diagnostics. */
  readonly errors: Array<Error> = []

  /** Use {@link Observer.connect}. */
  constructor(protected readonly client: Pg.Client) {
    // A server that goes away must never crash the process with an unhandled 'error' event.
    client.on("error", (error) => {
      this.errors.push(error)
    })
  }

  /**
   * Opens the observer's session (named `pg-warden-observer` unless told otherwise); rejects with the
   * driver's error when the server cannot be reached.
   */
  static async connect<T extends Observer>(
    this: new (
      client: Pg.Client
    ) => T,
    server: string | Pg.ClientConfig,
    options: ObserverOptions = { applicationName: OBSERVER_APPLICATION_NAME }
  ): Promise<T> {
    const client = new Pg.Client({
      ...(typeof server === "string" ? { connectionString: server } : server),
      application_name: options.applicationName,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000
    })
    const observer = new this(client)
    try {
      await client.connect()
    } catch (error) {
      await client.end().catch(() => undefined)
      throw error
    }
    return observer
  }

  async query<A>(text: string, values?: ReadonlyArray<unknown>): Promise<Array<A>> {
    const result = await this.client.query(text, values === undefined ? undefined : [...values])
    return result.rows as Array<A>
  }

  /** Backends whose `application_name` is exactly `applicationName`, oldest first. */
  async backends(applicationName: string): Promise<Array<Backend>> {
    return (await this.query<BackendRow>(BACKENDS_SQL, [applicationName])).map(toBackend)
  }

  async count(applicationName: string): Promise<number> {
    return (await this.backends(applicationName)).length
  }

  async states(applicationName: string): Promise<StateCounts> {
    return countStates(await this.backends(applicationName))
  }

  /** `pg_terminate_backend(pid)`: true when the signal was sent. */
  async terminate(pid: number): Promise<boolean> {
    const rows = await this.query<{ ok: boolean | null }>("SELECT pg_terminate_backend($1) AS ok", [pid])
    return rows[0]?.ok === true
  }

  /** `pg_terminate_backend` for every backend of `applicationName`; returns how many were signalled. */
  async terminateAll(applicationName: string): Promise<number> {
    const rows = await this.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE application_name = $1 AND pid <> pg_backend_pid()) t`,
      [applicationName]
    )
    return rows[0]?.n ?? 0
  }

  /**
   * Polls `probe` until `predicate` holds and returns that value; after `timeoutMs` it throws with
   * `message` and the last value seen (a failing probe is retried until then).
   */
  async waitFor<T>(probe: () => Promise<T>, predicate: (value: T) => boolean, options: WaitOptions = {}): Promise<T> {
    const outcome = await this.poll(probe, predicate, options)
    if (outcome.ok) return outcome.value
    const seen =
      "value" in outcome
        ? `last value: ${describe(outcome.value)}`
        : `probe never succeeded: ${describe(outcome.error)}`
    throw new Error(
      `waitFor timed out after ${options.timeoutMs ?? 10_000} ms: ${options.message ?? "condition not met"} (${seen})`
    )
  }

  /** Like {@link waitFor} on the backends of `applicationName`, but returns the last view instead of throwing. */
  async waitForBackends(
    applicationName: string,
    predicate: (backends: ReadonlyArray<Backend>) => boolean,
    timeoutMs: number
  ): Promise<{ readonly ok: boolean; readonly backends: ReadonlyArray<Backend> }> {
    const outcome = await this.poll(() => this.backends(applicationName), predicate, { timeoutMs })
    if ("value" in outcome) return { ok: outcome.ok, backends: outcome.value }
    throw outcome.error
  }

  async waitForNoBackends(applicationName: string, timeoutMs = 10_000): Promise<void> {
    await this.waitFor(
      () => this.backends(applicationName),
      (backends) => backends.length === 0,
      { timeoutMs, message: `backends with application_name=${applicationName} still present` }
    )
  }

  /** Never rejects; bounded by `timeoutMs` (the socket is destroyed past it). */
  close(timeoutMs = 2_000): Promise<void> {
    return endClient(this.client, timeoutMs)
  }

  private async poll<T>(
    probe: () => Promise<T>,
    predicate: (value: T) => boolean,
    options: WaitOptions
  ): Promise<
    | { readonly ok: true; readonly value: T }
    | { readonly ok: false; readonly value: T }
    | { readonly ok: false; readonly error: unknown }
  > {
    const deadline = Date.now() + (options.timeoutMs ?? 10_000)
    const interval = options.intervalMs ?? 20
    let last: { readonly value: T } | undefined
    let lastError: unknown
    for (;;) {
      try {
        const value = await probe()
        if (predicate(value)) return { ok: true, value }
        last = { value }
      } catch (error) {
        lastError = error
      }
      if (Date.now() >= deadline) break
      await sleep(Math.min(interval, Math.max(0, deadline - Date.now())))
    }
    return last !== undefined ? { ok: false, value: last.value } : { ok: false, error: lastError }
  }
}

/**
 * Sends a protocol CancelRequest for the statement `client` is running, on a fresh socket to the
 * same server, within `timeoutMs`. `delivered` means the server took the request (it signals the
 * backend, then closes the socket); whether a statement was running then is the server's business.
 */
export const cancelByProtocol = (client: Pg.Client, timeoutMs: number): Promise<CancelOutcome> => {
  const { pid, secretKey } = backendKey(client)
  return sendCancelRequest(
    { host: client.host, port: client.port, tls: cancelTlsOf(client) },
    pid,
    secretKey,
    timeoutMs
  )
}

/** The backend process id of a connected `client`. */
export const backendPid = (client: Pg.Client): number => backendKey(client).pid
