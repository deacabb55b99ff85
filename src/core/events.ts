/**
 * What a pool tells whoever watches it, as it happens: the edition turns these into metrics (named
 * after the OpenTelemetry database-client conventions) and the user's hooks. Plain callbacks, called
 * synchronously where the pool or a session does the thing; a callback that throws is ignored, so
 * watching can never break the release protocol.
 *
 * @internal
 */
import type { AuditReport } from "./audit.js"
import type { CoreError } from "./errors.js"
import type { ReleaseOutcome } from "./session.js"
import type { CancelOutcome, TerminateOutcome } from "./wire.js"

export interface PoolEvents {
  /** A new session connected; `ms` is the whole handshake (TCP, TLS, auth, startup, `onConnect`). */
  readonly connected?: ((ms: number) => void) | undefined
  /** A borrower got a session after waiting `ms` for it (0 when one was idle). */
  readonly acquired?: ((ms: number) => void) | undefined
  /** A lease ended after `ms` of use; `outcome` is what the release protocol did. */
  readonly released?: ((outcome: ReleaseOutcome, ms: number) => void) | undefined
  /** A waiter's `acquireTimeout` passed. */
  readonly timedOut?: (() => void) | undefined
  /** A cancel was sent for an interrupted statement, through the cancel channel or the protocol. */
  readonly cancelSent?: ((via: "channel" | "protocol", outcome: CancelOutcome) => void) | undefined
  /** A backend was ended from the server side (`pg_terminate_backend`): whether the server confirmed it. */
  readonly terminated?: ((outcome: TerminateOutcome) => void) | undefined
  /** The pool's counts may have changed without a lease (a connection retired or lost, the maintenance tick). */
  readonly changed?: (() => void) | undefined
  /** A step of the release protocol (`cancel`, `drain`, `rollback`, `reset`, `close`, `terminate`) took `ms`. */
  readonly cleanupStep?: ((step: string, ms: number) => void) | undefined
  /** The periodic audit compared the pool with the server. */
  readonly audited?: ((report: AuditReport) => void) | undefined
  /** The periodic audit could not run (the server could not be reached within its deadline). */
  readonly auditFailed?: ((error: CoreError) => void) | undefined
}

/** Calls an event's callback, if any; what it throws is dropped. */
export const tell = <A extends ReadonlyArray<unknown>>(
  callback: ((...args: A) => void) | undefined,
  ...args: A
): void => {
  if (callback === undefined) return
  try {
    callback(...args)
  } catch {
    // Watching never breaks the pool.
  }
}

/** Both watchers' callbacks, in order (metrics first, then the user's hooks). */
export const combineEvents = (a: PoolEvents | undefined, b: PoolEvents | undefined): PoolEvents | undefined => {
  if (a === undefined) return b
  if (b === undefined) return a
  const both =
    <A extends ReadonlyArray<unknown>>(x: ((...args: A) => void) | undefined, y: ((...args: A) => void) | undefined) =>
    (...args: A) => {
      tell(x, ...args)
      tell(y, ...args)
    }
  return {
    connected: both(a.connected, b.connected),
    acquired: both(a.acquired, b.acquired),
    released: both(a.released, b.released),
    timedOut: both(a.timedOut, b.timedOut),
    cancelSent: both(a.cancelSent, b.cancelSent),
    terminated: both(a.terminated, b.terminated),
    changed: both(a.changed, b.changed),
    cleanupStep: both(a.cleanupStep, b.cleanupStep),
    audited: both(a.audited, b.audited),
    auditFailed: both(a.auditFailed, b.auditFailed)
  }
}
