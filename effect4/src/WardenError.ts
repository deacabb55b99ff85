/**
 * pg-warden's own failures inside effect 4's `SqlError`. Effect 4's reasons are a closed set, so a
 * failure of pg-warden's (an acquire timeout, the pool closed, a COMMIT the server rolled back, …)
 * carries the nearest reason class (`ConnectionError` where trying again may help, `UnknownError`
 * otherwise) with pg-warden's reason as the reason's `cause`. `fromSqlError` reads it back.
 *
 * @since 0.1.0
 */
import type { SqlError } from "effect/sql/SqlError"
import { CoreError, type Reason as CoreReason, type PoolSnapshot } from "../../src/core/errors.js"

/**
 * Why pg-warden failed: `AcquireTimeout`, `PoolClosed`, `ConnectFailed`, `ConnectTimeout`,
 * `ConnectionLost`, `CommitFailed`, `CommitRolledBack`, `TransactionLeftOpen`, `InvalidConfig`,
 * `UnsupportedDriver`.
 *
 * @since 0.1.0
 * @category models
 */
export type Reason = CoreReason

/**
 * @since 0.1.0
 * @category models
 */
export interface WardenFailure {
  readonly reason: Reason
  /** What happened, in words. */
  readonly detail: string
  /** The pool at the time, for an acquire timeout. */
  readonly snapshot: PoolSnapshot | undefined
  /** The driver's error behind it, if any. */
  readonly cause: unknown
}

/**
 * pg-warden's reason behind an `SqlError`, or `undefined` when the failure is the server's or the
 * driver's own (then `error.reason` classifies it by SQLSTATE, as @effect/sql-pg 4 does).
 *
 * @since 0.1.0
 * @category utils
 */
export const fromSqlError = (error: SqlError): WardenFailure | undefined => {
  const cause = error.reason.cause
  if (!(cause instanceof CoreError) || cause.reason === "Statement" || cause.reason === "Refused") return undefined
  return { reason: cause.reason, detail: cause.detail, snapshot: cause.snapshot, cause: cause.cause }
}
