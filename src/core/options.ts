/**
 * pg-warden's own options, declared once for every edition: each edition spells a duration its own
 * way (Effect 3's `DurationInput`, Effect 4's `Duration.Input`), so the options are generic over it,
 * and `wardenInput` turns them into the core's milliseconds with the edition's conversion.
 *
 * @internal
 */
import type { ConfigInput, SafetyInput } from "./config.js"
import type { PoolEvents } from "./events.js"
import type { ReleaseOutcome } from "./session.js"
import type { TerminateOutcome } from "./wire.js"

/**
 * The user's event hooks, each returning the edition's effect (`R`). They run in the Layer's
 * runtime, in fibers of their own, so they never delay a lease or a release; each is interrupted
 * after `terminateTimeout` (default 1 s), and a failure or timeout is logged, never propagated.
 * (`onConnect` is something else: it runs statements on a new connection before its first use.)
 */
export interface WardenHooks<R> {
  /** A new connection was opened; `ms` is the whole handshake. */
  readonly connected?: ((event: { readonly ms: number }) => R) | undefined
  /** A `reserve`, transaction or statement got a connection after waiting `waitedMs`. */
  readonly acquired?: ((event: { readonly waitedMs: number }) => R) | undefined
  /** A lease ended after `heldMs`; `outcome` is what the release protocol did with the connection. */
  readonly released?: ((event: { readonly outcome: ReleaseOutcome; readonly heldMs: number }) => R) | undefined
  /** A backend was ended with `pg_terminate_backend`; `outcome` says whether the server confirmed it. */
  readonly terminated?: ((event: { readonly outcome: TerminateOutcome }) => R) | undefined
}

/** The hooks as pool events: `run` starts one hook's effect (in the edition's runtime) with its name. */
export const hookEvents = <R>(
  hooks: WardenHooks<R> | undefined,
  run: (name: keyof WardenHooks<R>, effect: () => R) => void
): PoolEvents | undefined => {
  if (hooks === undefined) return undefined
  const { acquired, connected, released, terminated } = hooks
  return {
    ...(connected !== undefined ? { connected: (ms: number) => run("connected", () => connected({ ms })) } : {}),
    ...(acquired !== undefined ? { acquired: (ms: number) => run("acquired", () => acquired({ waitedMs: ms })) } : {}),
    ...(released !== undefined
      ? {
          released: (outcome: ReleaseOutcome, ms: number) => run("released", () => released({ outcome, heldMs: ms }))
        }
      : {}),
    ...(terminated !== undefined
      ? { terminated: (outcome: TerminateOutcome) => run("terminated", () => terminated({ outcome })) }
      : {})
  }
}

/**
 * Server-side safety settings sent in every session's startup packet (defence in depth for when even
 * the out-of-band terminate cannot reach the server). `false` sends none, for proxies that refuse
 * startup options.
 */
export interface ServerSafetyOptions<D> {
  /** `idle_in_transaction_session_timeout`. Default 60 s. `null` leaves the server's value. */
  readonly idleInTransactionSessionTimeout?: D | null | undefined
  /**
   * `client_connection_check_interval` (PostgreSQL 14+; dropped automatically on older servers): how
   * often a running statement checks that its client is still there. Default 1 s. `null` leaves the
   * server's value.
   */
  readonly clientConnectionCheckInterval?: D | null | undefined
  /**
   * Server-side TCP keepalive (`tcp_keepalives_idle`, `_interval`, `_count`), so a backend orphaned
   * by a partition is reaped. Default idle 30 s, interval 10 s, count 3. `null` leaves the server's
   * values.
   */
  readonly tcpKeepalives?: { readonly idle: D; readonly interval: D; readonly count: number } | null | undefined
}

/** The options pg-warden adds to `@effect/sql-pg`'s configuration, in every edition. */
export interface WardenOptions<D> {
  /** How long a fiber may wait for a connection before failing with `AcquireTimeout`. Default 10 s. */
  readonly acquireTimeout?: D | undefined
  /** Deadline to deliver a protocol CancelRequest (fresh socket, server closes it). Default 500 ms. */
  readonly cancelTimeout?: D | undefined
  /** Deadline for a cancelled statement (or a pending ReadyForQuery) to settle. Default 1 s. */
  readonly drainTimeout?: D | undefined
  /** Deadline for the ROLLBACK of a transaction left open. Default 1 s. */
  readonly rollbackTimeout?: D | undefined
  /** Deadline for resetting a session's state (C8). Default 1 s. */
  readonly resetTimeout?: D | undefined
  /** Deadline for the out-of-band `pg_terminate_backend` (and graceful close). Default 1 s. */
  readonly terminateTimeout?: D | undefined
  /** See {@link ServerSafetyOptions}. Default: all on. */
  readonly serverSafety?: ServerSafetyOptions<D> | false | undefined
  /**
   * When an interrupted statement finishes before its CancelRequest reaches the server, the cancel
   * may still be pending on the backend. With `cancelProbe` (default true) one `SELECT 1` on that
   * session, before anyone else can have it, consumes or confirms it and the session is reused; with
   * `false` such a session is terminated. Keep the default when the client talks to PostgreSQL
   * itself (PostgreSQL closes the cancel socket only after it has signalled the backend); set `false`
   * behind a proxy that acknowledges a CancelRequest before it reaches the server.
   */
  readonly cancelProbe?: boolean | undefined
  /**
   * Cancel statements with `pg_cancel_backend` over one control connection of the pool's own
   * (outside its slots, opened at the first cancel, closed with the pool) instead of a protocol
   * CancelRequest on a new connection each time: about 1.5 ms instead of a connection and a server
   * process per cancel. Used only for connections whose backend PID the server confirmed at connect
   * (not behind PgBouncer) and whose backend still shows the pool's application name; the protocol
   * CancelRequest is the fallback. Default true; `false` always uses the protocol.
   */
  readonly cancelChannel?: boolean | undefined
  /**
   * When a lease's session is reset to its baseline before the next borrower gets it (C8): `"auto"`
   * (default) after a lease whose statements may have changed session state (SET, `set_config`,
   * session advisory locks, temporary tables, PREPARE, LISTEN, WITH HOLD cursors, a function
   * pg-warden does not know, …); `"always"` after every lease that ran a statement, for code that
   * changes session state where no statement shows it (a trigger calling `set_config`).
   */
  readonly sessionReset?: "auto" | "always" | undefined
  /** `statement_timeout` of every session, sent in the startup packet. Default: the server's. */
  readonly statementTimeout?: D | undefined
  /** `lock_timeout` of every session, sent in the startup packet. Default: the server's. */
  readonly lockTimeout?: D | undefined
  /**
   * A `reserve` or transaction that holds its connection longer than this logs one warning (through
   * Effect's logger) naming the holder: its fiber, its span and the stack where it took the
   * connection. Capturing that stack costs a little per `reserve` and transaction, so it is off by
   * default (`undefined` or 0). Who holds the connections is listed by `WardenPool.stats` and by every
   * `AcquireTimeout` either way, without the stack.
   */
  readonly leakDetectionThreshold?: D | undefined
  /**
   * Record the pool's metrics through Effect's `Metric` module: the OpenTelemetry database-client
   * ones (`db.client.connection.count` by state, `.idle.max`, `.idle.min`, `.max`, `.pending_requests`,
   * `.timeouts`, `.create_time`, `.wait_time`, `.use_time`) and pg-warden's own (`pg_warden.connection.releases`
   * by outcome, `pg_warden.cancels` by channel and outcome, `pg_warden.terminations` by outcome,
   * `pg_warden.cleanup.duration` by release step, and with `auditInterval` the audit counters), each with
   * `db.client.connection.pool.name`, `server.address` and `server.port`. Default false: they cost a few
   * metric updates per lease.
   */
  readonly metrics?: boolean | undefined
  /**
   * A connection idle longer than this is checked with one round trip (`SELECT 1`, within
   * `resetTimeout`) before it is handed out; one that does not answer (a proxy or the network dropped
   * it silently) is terminated and replaced, so no borrower gets a dead connection. Default 30 s; 0
   * never checks. A connection whose socket closed leaves the pool at once either way.
   */
  readonly validateIdleAfter?: D | undefined
  /** The client's TCP keepalive: the first probe after this long without traffic. Default 30 s (the OS's is 2 h). */
  readonly keepAliveDelay?: D | undefined
  /**
   * Run the audit (`WardenPool.audit`) this often, over a short-lived control connection, and log a
   * warning when the server and the pool disagree (a backend the pool does not hold, an idle session
   * busy on the server, a held session whose backend is gone); with `metrics`, count them too. Off by
   * default (`undefined` or 0).
   */
  readonly auditInterval?: D | undefined
  /**
   * The URL points at PgBouncer in transaction mode (PgBouncer 1.18 refuses the startup options that
   * carry the safety settings, and each transaction may run on another server backend). With `true`,
   * no run-time parameter travels with the connection (set them for the role, or with PgBouncer's
   * `connect_query`), statements are not prepared by name, cancels go by protocol through PgBouncer,
   * nothing is ended by PID (a forced end closes the socket, and PgBouncer drops a server connection
   * that is not idle), no session reset runs, and `listen` and the audit fail with `InvalidConfig`.
   * Options that need a direct connection fail with `InvalidConfig` too. Default false; connecting
   * to PgBouncer without it fails with `ConnectFailed` naming this option.
   */
  readonly pgbouncer?: boolean | undefined
  /**
   * How many short-lived control connections (`pg-warden-control:<applicationName>`: out-of-band terminates and
   * audits) the pool may have open at one time; more wait their turn within their own deadline (a terminate that gets
   * no slot in time leaves the backend to the server's safety settings). With the cancel channel and a LISTEN session,
   * this bounds what one pool opens: see the README's "Connection budget". Default 2.
   */
  readonly controlConnections?: number | undefined
}

/** The core's input for pg-warden's own options, durations converted by `ms`. */
export const wardenInput = <D>(
  options: WardenOptions<D>,
  ms: (duration: D) => number
): Pick<
  ConfigInput,
  | "acquireTimeout"
  | "cancelTimeout"
  | "drainTimeout"
  | "rollbackTimeout"
  | "resetTimeout"
  | "terminateTimeout"
  | "serverSafety"
  | "cancelProbe"
  | "cancelChannel"
  | "sessionReset"
  | "statementTimeout"
  | "lockTimeout"
  | "leakDetectionThreshold"
  | "validateIdleAfter"
  | "keepAliveDelay"
  | "auditInterval"
  | "pgbouncer"
  | "controlConnections"
> => {
  const opt = (duration: D | undefined) => (duration === undefined ? undefined : ms(duration))
  const safety = options.serverSafety
  const keepalives = safety === false || safety === undefined ? undefined : safety.tcpKeepalives
  const serverSafety: SafetyInput | false | undefined =
    safety === false || safety === undefined
      ? safety
      : {
          idleInTransactionSessionTimeout:
            safety.idleInTransactionSessionTimeout === null ? null : opt(safety.idleInTransactionSessionTimeout),
          clientConnectionCheckInterval:
            safety.clientConnectionCheckInterval === null ? null : opt(safety.clientConnectionCheckInterval),
          tcpKeepalives:
            keepalives === null || keepalives === undefined
              ? keepalives
              : { idle: ms(keepalives.idle), interval: ms(keepalives.interval), count: keepalives.count }
        }
  return {
    acquireTimeout: opt(options.acquireTimeout),
    cancelTimeout: opt(options.cancelTimeout),
    drainTimeout: opt(options.drainTimeout),
    rollbackTimeout: opt(options.rollbackTimeout),
    resetTimeout: opt(options.resetTimeout),
    terminateTimeout: opt(options.terminateTimeout),
    serverSafety,
    cancelProbe: options.cancelProbe,
    cancelChannel: options.cancelChannel,
    sessionReset: options.sessionReset,
    statementTimeout: opt(options.statementTimeout),
    lockTimeout: opt(options.lockTimeout),
    leakDetectionThreshold: opt(options.leakDetectionThreshold),
    validateIdleAfter: opt(options.validateIdleAfter),
    keepAliveDelay: opt(options.keepAliveDelay),
    auditInterval: opt(options.auditInterval),
    pgbouncer: options.pgbouncer,
    controlConnections: options.controlConnections
  }
}
