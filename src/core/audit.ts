/**
 * The audit (C7): the pool's view of its sessions next to the server's, over a short-lived control
 * connection within one deadline.
 *
 * @internal
 */
import { CoreError } from "./errors.js"
import { BACKENDS_SQL, type Backend, toBackend } from "./observer.js"
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
  /** On the server, not in the pool: leaked (or still being terminated). */
  readonly unknownToPool: ReadonlyArray<ServerBackend>
  /** Idle in the pool, but in a transaction or running a statement on the server. */
  readonly dirtyIdle: ReadonlyArray<ServerBackend>
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
  const applicationName = config.applicationName
  const timeoutMs = config.connectTimeoutMs + config.deadlines.terminate
  return controlStatement(config.client, timeoutMs, BACKENDS_SQL, [applicationName], (outcome) => {
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
    const unknownToPool = server.filter((b) => !known.has(b.pid))
    const dirtyIdle = server.filter((b) => idle.has(b.pid) && b.state !== "idle")
    onDone(undefined, {
      ok: unknownToPool.length === 0 && dirtyIdle.length === 0,
      applicationName,
      server,
      pool: pids,
      unknownToPool,
      dirtyIdle
    })
  })
}
