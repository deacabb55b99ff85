/**
 * LISTEN for every stream of a pool on one shared session, as `@effect/sql-pg` does: a channel
 * is listened to while at least one stream wants it, and the session is closed when no stream is
 * left. The session is outside the pool's slots (one connection more than `maxConnections`) and is
 * closed with the pool at the latest.
 *
 * @internal
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as Pg from "pg"
import type { Pool } from "../core/pool.js"
import type { Session } from "../core/session.js"
import { sqlError } from "../WardenError.js"
import { closeDedicated, openDedicated, run } from "./effect.js"

interface Subscriber {
  readonly channel: string
  readonly onPayload: (payload: string) => void
  readonly onFail: (error: SqlError) => void
}

export class ListenHub {
  private session: Session | undefined = undefined
  private readonly subscribers = new Set<Subscriber>()
  /** Channels the session listens to, with how many subscribers want each. */
  private readonly channels = new Map<string, number>()

  constructor(
    private readonly pool: Pool,
    /** One change of the shared session at a time (open, LISTEN, UNLISTEN, close). */
    private readonly lock: Effect.Semaphore
  ) {}

  /** Delivers `channel`'s notifications to `onPayload` until the scope closes. */
  subscribe(
    channel: string,
    onPayload: (payload: string) => void,
    onFail: (error: SqlError) => void
  ): Effect.Effect<void, SqlError, Scope.Scope> {
    const subscriber: Subscriber = { channel, onPayload, onFail }
    return Effect.acquireRelease(
      this.lock.withPermits(1)(
        Effect.gen(this, function* () {
          const session = this.session ?? (yield* this.open())
          if (!this.channels.has(channel)) {
            const listened = yield* Effect.exit(
              run(session, { text: `LISTEN ${Pg.escapeIdentifier(channel)}` }, () => {})
            )
            if (listened._tag === "Failure") {
              yield* this.closeIfUnused()
              return yield* listened
            }
          }
          this.channels.set(channel, (this.channels.get(channel) ?? 0) + 1)
          this.subscribers.add(subscriber)
        })
      ),
      () => this.lock.withPermits(1)(this.unsubscribe(subscriber))
    )
  }

  private open(): Effect.Effect<Session, SqlError> {
    return Effect.map(openDedicated(this.pool), (session) => {
      this.session = session
      session.client.on("notification", (message) => {
        if (message.payload === undefined) return
        for (const s of this.subscribers) if (s.channel === message.channel) s.onPayload(message.payload)
      })
      session.onLost = (lost) => this.lost(lost)
      return session
    })
  }

  /** The shared session broke: every stream fails; the next subscriber opens a new one. */
  private lost(session: Session): void {
    if (this.session !== session) return
    this.session = undefined
    this.channels.clear()
    const error = sqlError("ConnectionLost", "the LISTEN connection was lost", { cause: session.lost })
    for (const s of this.subscribers) s.onFail(error)
    this.subscribers.clear()
  }

  private unsubscribe(subscriber: Subscriber): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (!this.subscribers.delete(subscriber)) return Effect.void
      const left = (this.channels.get(subscriber.channel) ?? 1) - 1
      if (left > 0) {
        this.channels.set(subscriber.channel, left)
        return Effect.void
      }
      this.channels.delete(subscriber.channel)
      const session = this.session
      if (session === undefined) return Effect.void
      if (this.channels.size === 0) return this.closeIfUnused()
      // UNLISTEN within a deadline; a session that does not answer is closed (terminated).
      return Effect.flatMap(
        Effect.promise(() =>
          session.runBounded(
            `UNLISTEN ${Pg.escapeIdentifier(subscriber.channel)}`,
            session.config.deadlines.rollback,
            (error) => !error
          )
        ),
        (done) => (done ? Effect.void : this.close(session))
      )
    })
  }

  private closeIfUnused(): Effect.Effect<void> {
    return Effect.suspend(() => {
      const session = this.session
      return session !== undefined && this.channels.size === 0 ? this.close(session) : Effect.void
    })
  }

  private close(session: Session): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.session === session) {
        this.session = undefined
        this.channels.clear()
      }
      return closeDedicated(this.pool, session)
    })
  }
}
