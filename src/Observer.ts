/**
 * The server's view, for tests and tooling: an `Observer` is one plain `pg` session, separate from
 * any pool, that reads `pg_stat_activity` for an `application_name`, waits for a condition on it
 * and ends leftovers. It is how pg-warden's own tests, benchmark and `pg-warden check` assert what
 * the server holds rather than what a client believes. Promise-based, so it works the same under
 * any Effect major (wrap calls in `Effect.promise` / `Effect.tryPromise`).
 *
 * ```ts
 * import { Observer } from "pg-warden"
 *
 * const observer = await Observer.Observer.connect("postgres://postgres@localhost/test", {
 *   applicationName: "my-test-observer"
 * })
 * await observer.waitForNoBackends("my-service", 5_000)
 * await observer.close()
 * ```
 *
 * @since 0.1.0
 */
import type * as Pg from "pg"
import * as Core from "./core/observer.js"

/**
 * A backend as `pg_stat_activity` shows it.
 *
 * @since 0.1.0
 * @category models
 */
export type Backend = Core.Backend

/**
 * Counts of backends by state.
 *
 * @since 0.1.0
 * @category models
 */
export type StateCounts = Core.StateCounts

/**
 * @since 0.1.0
 * @category models
 */
export type WaitOptions = Core.WaitOptions

/**
 * @since 0.1.0
 * @category models
 */
export type ObserverOptions = Core.ObserverOptions

/**
 * The observer session: `connect`, then `backends`, `count`, `states`, `waitFor`, `waitForBackends`,
 * `waitForNoBackends`, `terminate`, `terminateAll`, `query`, and `close` (bounded, never rejects).
 *
 * @since 0.1.0
 * @category constructors
 */
export const Observer = Core.Observer

/**
 * @since 0.1.0
 * @category models
 */
export type Observer = Core.Observer

/**
 * Counts backends by state (`idle in transaction (aborted)` counts as idle in transaction).
 *
 * @since 0.1.0
 * @category utils
 */
export const countStates: (backends: ReadonlyArray<Backend>) => StateCounts = Core.countStates

/**
 * A predicate: the backend is running a statement whose text contains `fragment`.
 *
 * @since 0.1.0
 * @category utils
 */
export const runs: (fragment: string) => (backend: Backend) => boolean = Core.runs

/**
 * A predicate: the backend sits in an open transaction.
 *
 * @since 0.1.0
 * @category utils
 */
export const inTransaction: (backend: Backend) => boolean = Core.inTransaction

/**
 * Sends a protocol CancelRequest for whatever the connected `pg.Client` is running, on a fresh
 * socket, within `timeoutMs`: `delivered`, `failed` (no connection) or `timeout`.
 *
 * @since 0.1.0
 * @category utils
 */
export const cancelByProtocol: (client: Pg.Client, timeoutMs: number) => Promise<"delivered" | "failed" | "timeout"> =
  Core.cancelByProtocol

/**
 * The backend process id of a connected `pg.Client`.
 *
 * @since 0.1.0
 * @category utils
 */
export const backendPid: (client: Pg.Client) => number = Core.backendPid
