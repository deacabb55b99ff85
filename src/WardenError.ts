/**
 * The failures pg-warden itself raises. At the `SqlClient` boundary each one is carried as
 * the `cause` of an `SqlError` from `@effect/sql`, so code written against `SqlClient`
 * keeps handling one error type, and code that cares can look at `cause.reason`.
 *
 * @since 0.1.0
 */
import { SqlError } from "@effect/sql/SqlError"
import * as Data from "effect/Data"
import * as Core from "./core/errors.js"

/**
 * A point-in-time view of the pool, carried by acquire timeouts so the user can see who holds the
 * connections: `total`, `idle`, `inUse`, `waiting`, `connecting`, `releasing`, `maxConnections`.
 *
 * @since 0.1.0
 * @category models
 */
export type PoolSnapshot = Core.PoolSnapshot

/**
 * A connection in use and who holds it: `kind` (`reserve`, `transaction`, `statement`), the
 * holder's fiber and span, the backend PID, how long it has been held, the statement it runs now,
 * and (with `leakDetectionThreshold`) the stack where it was taken. Listed, longest-held first, by
 * `PoolSnapshot.holders` (every `AcquireTimeout`, `WardenPool.stats`).
 *
 * @since 0.1.0
 * @category models
 */
export type HolderReport = Core.HolderReport

/**
 * Why pg-warden failed:
 * - `AcquireTimeout`: no connection became free within `acquireTimeout`;
 * - `PoolClosed`: the Layer's scope closed; the pool hands out nothing more and revokes leases;
 * - `ConnectFailed`: the server refused or could not be reached (see `cause`, with its SQLSTATE);
 * - `ConnectTimeout`: connecting took longer than `connectTimeout`;
 * - `ConnectionLost`: the session broke while in use (server ended it, network error);
 * - `CommitFailed`: COMMIT returned an error;
 * - `CommitRolledBack`: the server answered COMMIT with ROLLBACK (the transaction had failed);
 * - `TransactionLeftOpen`: a statement outside `withTransaction` / `reserve` opened a transaction
 *   (a bare BEGIN); it was rolled back;
 * - `InvalidConfig`: the configuration cannot work (bad URL, bad numbers, conflicting settings);
 * - `UnsupportedDriver`: the installed `pg` lacks an internal pg-warden relies on (it needs `pg` ~8.23).
 *
 * @since 0.1.0
 * @category models
 */
export type Reason = Core.Reason

/**
 * @since 0.1.0
 * @category errors
 */
export class WardenError extends Data.TaggedError("WardenError")<{
  readonly reason: Reason
  readonly detail: string
  readonly cause?: unknown
  readonly snapshot?: PoolSnapshot | undefined
}> {
  /**
   * @since 0.1.0
   */
  override get message(): string {
    const code = sqlState(this.cause)
    const snapshot = this.snapshot
      ? ` [pool: total=${this.snapshot.total} idle=${this.snapshot.idle} inUse=${this.snapshot.inUse} waiting=${this.snapshot.waiting} connecting=${this.snapshot.connecting} releasing=${this.snapshot.releasing} max=${this.snapshot.maxConnections}]`
      : ""
    return `${this.reason}: ${this.detail}${code ? ` (SQLSTATE ${code})` : ""}${snapshot}`
  }

  /**
   * The code of the driver error behind this failure (a SQLSTATE such as `3D000`, or a system
   * error code such as `ECONNREFUSED`), where `@effect/sql-pg` users find it: `error.cause.code`.
   *
   * @since 0.1.0
   */
  get code(): string | undefined {
    const code = (this.cause as { code?: unknown } | undefined)?.code
    return typeof code === "string" ? code : undefined
  }

  /**
   * The SQLSTATE of the driver error behind this failure, when there is one.
   *
   * @since 0.1.0
   */
  get sqlState(): string | undefined {
    return sqlState(this.cause)
  }
}

/**
 * The SQLSTATE of a driver error (`pg`'s `DatabaseError.code`), or of an `SqlError` whose
 * cause is one.
 *
 * @since 0.1.0
 * @category utils
 */
export const sqlState: (error: unknown) => string | undefined = Core.sqlState

/**
 * Wraps a `WardenError` into the `SqlError` that `SqlClient` users handle.
 *
 * @since 0.1.0
 * @category constructors
 */
export const toSqlError = (error: WardenError): SqlError => new SqlError({ cause: error, message: error.message })

/**
 * Builds the `SqlError` for a `reason`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const sqlError = (
  reason: Reason,
  detail: string,
  options?: { readonly cause?: unknown; readonly snapshot?: PoolSnapshot | undefined }
): SqlError =>
  toSqlError(
    new WardenError({
      reason,
      detail,
      ...(options?.cause !== undefined ? { cause: options.cause } : {}),
      ...(options?.snapshot !== undefined ? { snapshot: options.snapshot } : {})
    })
  )

/**
 * The `WardenError` behind an `SqlError`, if pg-warden raised it.
 *
 * @since 0.1.0
 * @category utils
 */
export const fromSqlError = (error: unknown): WardenError | undefined => {
  const cause = (error as { cause?: unknown } | undefined)?.cause
  return cause instanceof WardenError ? cause : error instanceof WardenError ? error : undefined
}
