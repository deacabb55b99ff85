import type { StackSite } from "./stack.js"

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
  /** Who holds the connections in use, longest-held first (acquire timeouts and stats carry it). */
  readonly holders?: ReadonlyArray<HolderReport> | undefined
}

/** Who took a connection, as the edition that leased it describes the borrower. */
export interface Holder extends HolderInfo {
  /** Where it took the connection, captured only while leak detection is on (formatted when reported). */
  readonly site?: StackSite | undefined
}

/** A holder's description, as reported. */
export interface HolderInfo {
  /** `reserve`, `transaction` or `statement`. */
  readonly kind: "reserve" | "transaction" | "statement"
  /** The borrower's fiber, as its Effect runtime names it (`#12`). */
  readonly fiber?: string | undefined
  /** The span the borrower was in when it took the connection. */
  readonly span?: string | undefined
}

/** A connection in use, and who holds it. */
export interface HolderReport extends HolderInfo {
  /** Where it took the connection (the caller's frames first), with leak detection on. */
  readonly stack?: string | undefined
  /** The backend's PID (the server shows it in `pg_stat_activity`). */
  readonly pid: number
  /** How long the connection has been held. */
  readonly heldMs: number
  /** The statement the connection is running now, if any. */
  readonly running?: string | undefined
}

/** One line for a holder: `transaction by fiber #12 in span "x", held 5.2 s, running: select …`. */
export const describeHolder = (holder: HolderReport): string =>
  `${holder.kind} by ${holder.fiber !== undefined ? `fiber ${holder.fiber}` : "a fiber"}` +
  `${holder.span !== undefined ? ` in span ${JSON.stringify(holder.span)}` : ""}, backend ${holder.pid}, held ` +
  `${(holder.heldMs / 1000).toFixed(1)} s${holder.running !== undefined ? `, running: ${holder.running.slice(0, 200)}` : ", idle"}`

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

/** The leak warning's text: who holds the connection, for how long, and where it was taken. */
export const leakMessage = (thresholdMs: number, holder: HolderReport): string =>
  `pg-warden: a connection has been held longer than leakDetectionThreshold (${thresholdMs} ms): ` +
  `${describeHolder(holder)}${holder.stack !== undefined ? `; taken at:\n${holder.stack}` : ""}`

/** The leak warning's log annotations. */
export const leakAnnotations = (holder: HolderReport): Record<string, string | number> => ({
  "pg_warden.holder.kind": holder.kind,
  "pg_warden.holder.fiber": holder.fiber ?? "",
  "pg_warden.holder.span": holder.span ?? "",
  "pg_warden.holder.backend_pid": holder.pid,
  "pg_warden.holder.held_ms": holder.heldMs
})
