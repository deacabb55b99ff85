/**
 * Out-of-band observer for tests: a dedicated `pg.Client` (never a pool from the code under test) that
 * inspects `pg_stat_activity`, terminates backends and SIGSTOPs / SIGCONTs backend processes.
 */
import { randomBytes } from "node:crypto"
import * as Effect from "effect/Effect"
import pg from "pg"

export const ADMIN_APPLICATION_NAME = "warden-admin"

export interface Backend {
  readonly pid: number
  readonly state: string | null
  readonly query: string
  readonly xactStart: Date | null
  readonly stateChange: Date | null
  readonly waitEventType: string | null
  readonly backendType: string
}

export interface WaitForOptions {
  readonly timeoutMs?: number
  readonly intervalMs?: number
  readonly message?: string
}

interface BackendRow {
  pid: number
  state: string | null
  query: string | null
  xact_start: Date | null
  state_change: Date | null
  wait_event_type: string | null
  backend_type: string | null
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

const describeValue = (value: unknown): string => {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

export class Admin {
  /** Errors the client reported asynchronously (e.g. the server went away); kept for debugging. */
  readonly errors: Array<Error> = []

  private constructor(private readonly client: pg.Client) {}

  static async connect(url: string): Promise<Admin> {
    const client = new pg.Client({ connectionString: url, application_name: ADMIN_APPLICATION_NAME })
    const admin = new Admin(client)
    // A killed/restarted server must never crash the test process with an unhandled 'error' event.
    client.on("error", (error) => {
      admin.errors.push(error)
    })
    try {
      await client.connect()
    } catch (error) {
      await client.end().catch(() => undefined)
      throw error
    }
    return admin
  }

  async query<T>(sql: string, params?: ReadonlyArray<unknown>): Promise<Array<T>> {
    const result = await this.client.query(sql, params === undefined ? undefined : [...params])
    return result.rows as Array<T>
  }

  /** Backends (other than this admin's own) whose application_name is exactly `applicationName`. */
  async backends(applicationName: string): Promise<Array<Backend>> {
    const rows = await this.query<BackendRow>(
      `SELECT pid, state, query, xact_start, state_change, wait_event_type, backend_type
         FROM pg_stat_activity
        WHERE application_name = $1 AND pid <> pg_backend_pid()
        ORDER BY backend_start, pid`,
      [applicationName]
    )
    return rows.map((row) => ({
      pid: row.pid,
      state: row.state,
      query: row.query ?? "",
      xactStart: row.xact_start,
      stateChange: row.state_change,
      waitEventType: row.wait_event_type,
      backendType: row.backend_type ?? ""
    }))
  }

  async count(applicationName: string): Promise<number> {
    const rows = await this.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
      [applicationName]
    )
    return rows[0]?.n ?? 0
  }

  /** `pg_terminate_backend(pid)`: true when the signal was sent. */
  async terminate(pid: number): Promise<boolean> {
    const rows = await this.query<{ ok: boolean | null }>(`SELECT pg_terminate_backend($1) AS ok`, [pid])
    return rows[0]?.ok === true
  }

  /** Polls `probe` until `predicate` holds; otherwise throws with `message` and the last value seen. */
  async waitFor<T>(
    probe: () => Promise<T>,
    predicate: (value: T) => boolean,
    options: WaitForOptions = {}
  ): Promise<T> {
    const timeoutMs = options.timeoutMs ?? 10_000
    const intervalMs = options.intervalMs ?? 25
    const deadline = Date.now() + timeoutMs
    let last: { value: T } | undefined
    let lastError: unknown
    for (;;) {
      try {
        const value = await probe()
        last = { value }
        if (predicate(value)) return value
      } catch (error) {
        lastError = error
      }
      if (Date.now() >= deadline) break
      await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())))
    }
    const what = options.message ?? "condition not met"
    const seen =
      last !== undefined
        ? `last value: ${describeValue(last.value)}`
        : `probe never succeeded: ${lastError instanceof Error ? lastError.message : describeValue(lastError)}`
    throw new Error(`waitFor timed out after ${timeoutMs} ms: ${what} (${seen})`)
  }

  async waitForNoBackends(applicationName: string, timeoutMs = 10_000): Promise<void> {
    await this.waitFor(
      () => this.backends(applicationName),
      (backends) => backends.length === 0,
      { timeoutMs, message: `backends with application_name=${applicationName} still present` }
    )
  }

  /** SIGSTOP a backend process (server runs on this machine; we are root). */
  freeze(pid: number): void {
    process.kill(pid, "SIGSTOP")
  }

  /** SIGCONT a backend process frozen with `freeze`. */
  thaw(pid: number): void {
    process.kill(pid, "SIGCONT")
  }

  /** Never rejects. */
  async close(): Promise<void> {
    await this.client.end().catch(() => undefined)
  }
}

/** `warden-test-${prefix}-${random}`, shortened (prefix first) to PostgreSQL's 63-byte identifier limit. */
export const uniqueAppName = (prefix: string): string => {
  const random = randomBytes(6).toString("hex")
  const fixed = "warden-test-".length + 1 + random.length
  const room = Math.max(0, 63 - fixed)
  const safePrefix = prefix.replace(/[^\x20-\x7e]/g, "_").slice(0, room)
  return `warden-test-${safePrefix}-${random}`
}

/** Acquires an `Admin` for the duration of `f` and always closes it. Connection failures are defects. */
export const withAdmin = <A, E, R>(url: string, f: (admin: Admin) => Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.acquireUseRelease(
    Effect.promise(() => Admin.connect(url)),
    f,
    (admin) => Effect.promise(() => admin.close())
  )
