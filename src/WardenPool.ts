/**
 * The pool behind a `WardenClient`, as a service: its stats (derived from the pool state
 * and counters of every release outcome) and an audit that checks the pool's view against
 * the server's own `pg_stat_activity`.
 *
 * @since 0.1.0
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as CoreAudit from "./core/audit.js"
import type { PoolSnapshot } from "./WardenError.js"

/**
 * Counters since the pool started. Release outcomes: `reused` (clean, back as is),
 * `rolledBack` (open transaction rolled back), `reset` (session state the lease changed was reset
 * to the baseline, C8), `cancelled` (statement cancelled, confirmed), `closed` (clean, closed
 * gracefully), `terminated` (socket destroyed, backend ended). One outcome per release.
 *
 * @since 0.1.0
 * @category models
 */
export interface PoolCounters {
  readonly created: number
  readonly connectFailures: number
  readonly acquired: number
  readonly acquireTimeouts: number
  readonly waitersInterrupted: number
  readonly reused: number
  readonly rolledBack: number
  readonly reset: number
  readonly cancelled: number
  readonly closed: number
  readonly terminated: number
  readonly lostWhileIdle: number
  readonly retiredIdle: number
  readonly retiredExpired: number
  /**
   * Cleanups stopped by their outer deadline (the sum of the cleanup deadlines plus 500 ms) because
   * a step overran its own: the connection was aborted (socket destroyed, backend ended out of band).
   * Should stay 0; anything else is a bug worth reporting.
   */
  readonly overran: number
  /** Connections idle longer than `validateIdleAfter` that were checked before being handed out. */
  readonly validated: number
  /** Of those, the ones that did not answer: terminated and replaced. */
  readonly validationFailures: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface PoolStats extends PoolSnapshot {
  readonly counters: PoolCounters
  readonly closed: boolean
}

/**
 * A backend as the server reports it in `pg_stat_activity`: `pid`, `state`, `query`, `xactStart`,
 * `stateChange`, `waitEventType`, `backendType`.
 *
 * @since 0.1.0
 * @category models
 */
export type ServerBackend = CoreAudit.ServerBackend

/**
 * The pool's view compared with the server's. `ok` is true when every backend the server shows for
 * the pool's `application_name` is one the pool holds and no session the pool believes idle is in a
 * transaction on the server; `unknownToPool` lists backends on the server the pool does not hold
 * (leaked, or still being terminated), `dirtyIdle` sessions idle in the pool but busy on the server.
 *
 * @since 0.1.0
 * @category models
 */
export type AuditReport = CoreAudit.AuditReport

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
export const WardenPool: Context.Tag<WardenPool, WardenPool> = Context.GenericTag<WardenPool>("pg-warden/WardenPool")
