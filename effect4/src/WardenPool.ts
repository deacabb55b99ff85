/**
 * The pool behind a `WardenClient` layer: live stats and the audit against the server's view.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type { SqlError } from "effect/sql/SqlError"
import type { AuditReport as CoreAuditReport, ServerBackend as CoreServerBackend } from "../../src/core/audit.js"
import type { PoolSnapshot } from "../../src/core/errors.js"
import type { PoolCounters as CorePoolCounters } from "../../src/core/pool.js"

/**
 * What the pool did since it opened: connections created, acquisitions, and one release outcome
 * per release (`reused`, `rolledBack`, `reset`, `cancelled`, `closed`, `terminated`), plus
 * `overran` (a cleanup stopped by the outer deadline; should stay 0).
 *
 * @since 0.1.0
 * @category models
 */
export type PoolCounters = Readonly<CorePoolCounters>

/**
 * @since 0.1.0
 * @category models
 */
export interface PoolStats extends PoolSnapshot {
  readonly counters: PoolCounters
  readonly closed: boolean
}

/**
 * A backend as the server reports it in `pg_stat_activity`.
 *
 * @since 0.1.0
 * @category models
 */
export type ServerBackend = CoreServerBackend

/**
 * The pool's view compared with the server's: `ok` when every backend the server shows for the
 * pool's `application_name` is one the pool holds and no session the pool believes idle is busy.
 *
 * @since 0.1.0
 * @category models
 */
export type AuditReport = CoreAuditReport

/**
 * @since 0.1.0
 * @category models
 */
export interface WardenPool {
  readonly applicationName: string
  readonly stats: Effect.Effect<PoolStats>
  readonly audit: Effect.Effect<AuditReport, SqlError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export const WardenPool: Context.Service<WardenPool, WardenPool> = Context.Service<WardenPool>("pg-warden/WardenPool")
