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

/**
 * Several watchers as one, each callback calling theirs in order (metrics, then the user's hooks, then
 * the audit's log). Only the callbacks some watcher has are defined, so an event nobody watches costs
 * nothing (a release step is timed only when someone wants its duration).
 */
export const combineEvents = (...watchers: ReadonlyArray<PoolEvents | undefined>): PoolEvents | undefined => {
  const present = watchers.filter((w): w is PoolEvents => w !== undefined)
  if (present.length <= 1) return present[0]
  const combined: Record<string, (...args: Array<never>) => void> = {}
  for (const key of new Set(present.flatMap((w) => Object.keys(w)))) {
    const callbacks = present
      .map((w) => w[key as keyof PoolEvents] as ((...args: Array<never>) => void) | undefined)
      .filter((f) => f !== undefined)
    if (callbacks.length > 0)
      combined[key] = (...args) => {
        for (const callback of callbacks) tell(callback, ...args)
      }
  }
  return combined as PoolEvents
}
