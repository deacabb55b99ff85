/**
 * The audit (C7): the pool's view of its sessions next to the server's, over a short-lived control
 * connection within one deadline.
 *
 * @internal
 */
import { CoreError } from "./errors.js"
import type { PoolEvents } from "./events.js"
import { BACKENDS_BY_NAME_OR_PID_SQL, type Backend, toBackend } from "./observer.js"
import type { Member, Pool } from "./pool.js"
import { controlStatement } from "./wire.js"

/** A backend as the server reports it. */
export type ServerBackend = Backend

/**
 * The pool's view compared with the server's. `ok` is true when every backend the server shows for
 * the pool's `application_name` is one the pool holds, and no session the pool believes idle is in
 * a transaction or running a statement on the server.
 */
export interface AuditReport {
  readonly ok: boolean
  readonly applicationName: string
  readonly server: ReadonlyArray<ServerBackend>
  readonly pool: {
    readonly idle: ReadonlyArray<number>
    readonly leased: ReadonlyArray<number>
    readonly releasing: ReadonlyArray<number>
  }
  /** On the server under the pool's `application_name`, not in the pool: leaked (or still being terminated). */
  readonly unknownToPool: ReadonlyArray<ServerBackend>
  /** Idle in the pool, but in a transaction or running a statement on the server. */
  readonly dirtyIdle: ReadonlyArray<ServerBackend>
  /**
   * In the pool (idle or leased, with a backend PID the server confirmed at connect), but not on the
   * server: the pool holds a session whose backend is gone.
   */
  readonly missingOnServer: ReadonlyArray<number>
  /** The pool's backends that the server shows under another `application_name` (a `SET` during a lease). */
  readonly renamed: ReadonlyArray<ServerBackend>
}

/**
 * Compares the pool's sessions with `pg_stat_activity`, within the connect deadline plus the
 * terminate deadline. `onDone` is called once; the returned function abandons the audit.
 */
export const audit = <S extends Member>(
  pool: Pool<S>,
  onDone: (error: CoreError | undefined, report?: AuditReport) => void
): (() => void) => {
  const config = pool.config.session
  if (config.pgbouncer === true) {
    onDone(
      new CoreError("InvalidConfig", "the audit cannot run through PgBouncer: it maps sessions to backends by PID")
    )
    return () => {}
  }
  const applicationName = config.applicationName
  const timeoutMs = config.connectTimeoutMs + config.deadlines.terminate
  const verified = pool.verifiedPids()
  const query = BACKENDS_BY_NAME_OR_PID_SQL
  return controlStatement(
    config.client,
    timeoutMs,
    query,
    [applicationName, [...verified]],
    (outcome) => {
      if (outcome._tag === "timeout") {
        return onDone(new CoreError("ConnectTimeout", `the audit did not complete within ${timeoutMs} ms`))
      }
      if (outcome._tag === "failed") {
        return onDone(
          outcome.connecting
            ? new CoreError("ConnectFailed", "audit could not connect", outcome.error)
            : new CoreError("Statement", "audit failed", outcome.error)
        )
      }
      const server: Array<ServerBackend> = outcome.result.rows.map(toBackend)
      const pids = pool.pids()
      const known = new Set([...pids.idle, ...pids.leased, ...pids.releasing])
      const idle = new Set(pids.idle)
      const onServer = new Set(server.map((b) => b.pid))
      const unknownToPool = server.filter((b) => !known.has(b.pid) && b.applicationName === applicationName)
      const dirtyIdle = server.filter((b) => idle.has(b.pid) && b.state !== "idle")
      // Only sessions still held after the query: one that left the pool meanwhile is not missing.
      const held = pool.pids()
      const stillHeld = new Set([...held.idle, ...held.leased])
      const missingOnServer = verified.filter((pid) => stillHeld.has(pid) && !onServer.has(pid))
      const renamed = server.filter((b) => known.has(b.pid) && b.applicationName !== applicationName)
      onDone(undefined, {
        ok: unknownToPool.length === 0 && dirtyIdle.length === 0 && missingOnServer.length === 0,
        applicationName,
        server: server.filter((b) => b.applicationName === applicationName || known.has(b.pid)),
        pool: pids,
        unknownToPool,
        dirtyIdle,
        missingOnServer,
        renamed
      })
    },
    config.control
  )
}

/** What a periodic audit found, in one line (for its warning), or `undefined` when it found nothing wrong. */
export const auditProblems = (report: AuditReport): string | undefined => {
  if (report.ok) return undefined
  const parts: Array<string> = []
  if (report.unknownToPool.length > 0) {
    parts.push(
      `${report.unknownToPool.length} backend(s) on the server that the pool does not hold (leaked, or still being terminated): ${report.unknownToPool.map((b) => b.pid).join(", ")}`
    )
  }
  if (report.dirtyIdle.length > 0) {
    parts.push(
      `${report.dirtyIdle.length} idle session(s) busy on the server: ${report.dirtyIdle.map((b) => `${b.pid} ${b.state}`).join(", ")}`
    )
  }
  if (report.missingOnServer.length > 0) {
    parts.push(
      `${report.missingOnServer.length} session(s) the pool holds whose backend is gone: ${report.missingOnServer.join(", ")}`
    )
  }
  return `pg-warden audit of ${report.applicationName}: ${parts.join("; ")}`
}

/** The periodic audit's findings as warnings through `warn` (each edition's logger). */
export const auditWarnings = (warn: (message: string) => void): PoolEvents => ({
  audited: (report) => {
    const problems = auditProblems(report)
    if (problems !== undefined) warn(problems)
  },
  auditFailed: (error) => warn(`pg-warden audit could not run: ${error.message}`)
})
