/**
 * The failures of the core, as plain values: no Effect, no `SqlError`. Each edition maps them to
 * its own error types at its boundary (the Effect 3 edition: `SqlError` carrying a `WardenError`).
 *
 * @internal
 */

/**
 * A point-in-time view of the pool, carried by acquire timeouts so the user can see who holds the
 * connections.
 */
export interface PoolSnapshot {
  readonly total: number
  readonly idle: number
  readonly inUse: number
  readonly waiting: number
  readonly connecting: number
  readonly releasing: number
  readonly maxConnections: number
}

/** Why pg-warden failed (see `WardenError.Reason` for what each means to a user). */
export type Reason =
  | "AcquireTimeout"
  | "PoolClosed"
  | "ConnectFailed"
  | "ConnectTimeout"
  | "ConnectionLost"
  | "CommitFailed"
  | "CommitRolledBack"
  | "TransactionLeftOpen"
  | "InvalidConfig"
  | "UnsupportedDriver"

/**
 * A failure of the core:
 * - a `Reason` of pg-warden's own;
 * - `"Statement"`: the server or the driver failed a statement (`cause` is the driver's error,
 *   `detail` says at which step);
 * - `"Refused"`: the session refuses statements (revoked by shutdown, or lost; `cause` says why).
 */
export class CoreError extends Error {
  constructor(
    readonly reason: Reason | "Statement" | "Refused",
    readonly detail: string,
    override readonly cause?: unknown,
    readonly snapshot?: PoolSnapshot
  ) {
    super(detail)
  }
}

/**
 * The SQLSTATE of a driver error (`pg`'s `DatabaseError.code`), or of an error whose cause (up to
 * a few levels down) is one.
 */
export const sqlState = (error: unknown): string | undefined => {
  let current: unknown = error
  for (let depth = 0; depth < 4 && typeof current === "object" && current !== null; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}
