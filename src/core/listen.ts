/**
 * LISTEN for every subscriber of a pool on one shared session: a channel is listened to while at
 * least one subscriber wants it, and the session is closed when none is left. The session is outside
 * the pool's slots (one connection more than `maxConnections`) and is closed with the pool at the
 * latest. Each edition wraps `subscribe` in its own stream or queue.
 *
 * @internal
 */
import * as Pg from "pg"
import { CoreError } from "./errors.js"
import type { Pool } from "./pool.js"
import type { Session } from "./session.js"

/** One notification, as the server sent it. */
export interface Notification {
  readonly processId: number
  readonly channel: string
  readonly payload: string
}

interface Subscriber {
  readonly channel: string
  readonly onNotification: (notification: Notification) => void
  readonly onFail: (error: CoreError) => void
}

export class ListenHub {
  private session: Session | undefined = undefined
  private readonly subscribers = new Set<Subscriber>()
  /** Channels the session listens to, with how many subscribers want each. */
  private readonly channels = new Map<string, number>()
  /** One change of the shared session at a time (open, LISTEN, UNLISTEN, close). */
  private tail: Promise<unknown> = Promise.resolve()

  constructor(private readonly pool: Pool) {}

  /**
   * Delivers `channel`'s notifications once the server confirmed the LISTEN; resolves with the
   * function that ends the subscription (it never rejects). `onFail` is called at most once, when
   * the shared session is lost; the subscription is over then.
   */
  subscribe(
    channel: string,
    onNotification: (notification: Notification) => void,
    onFail: (error: CoreError) => void
  ): Promise<() => Promise<void>> {
    if (this.pool.config.session.pgbouncer === true) {
      // In transaction mode the LISTEN would run on whichever backend is free and be forgotten with it.
      return Promise.reject(
        new CoreError(
          "InvalidConfig",
          "LISTEN cannot work through PgBouncer in transaction mode: listen with a client connected to the server itself"
        )
      )
    }
    const subscriber: Subscriber = { channel, onNotification, onFail }
    return this.serially(async () => {
      const session = this.session ?? (await this.open())
      if (!this.channels.has(channel)) {
        // LISTEN within a deadline; a session that does not answer is closed (terminated) and every
        // subscriber on it fails.
        let failure: unknown
        const done = await session.runBounded(
          `LISTEN ${Pg.escapeIdentifier(channel)}`,
          session.config.deadlines.rollback,
          (error) => {
            failure = error
            return !error
          }
        )
        if (!done) {
          if (failure === undefined || failure === null) await this.unresponsive(session)
          else await this.closeIfUnused()
          throw failure instanceof CoreError
            ? failure
            : new CoreError(
                "Statement",
                "Failed to execute statement",
                failure ?? new Error(`LISTEN had no answer within ${session.config.deadlines.rollback} ms`)
              )
        }
      }
      this.channels.set(channel, (this.channels.get(channel) ?? 0) + 1)
      this.subscribers.add(subscriber)
      return () => this.serially(() => this.unsubscribe(subscriber))
    })
  }

  private serially<A>(f: () => Promise<A>): Promise<A> {
    const next = this.tail.then(f)
    this.tail = next.catch(() => undefined)
    return next
  }

  private open(): Promise<Session> {
    return new Promise((resolve, reject) =>
      this.pool.openDedicated((error, session) => {
        if (error !== undefined) return reject(error)
        this.session = session!
        session!.client.on("notification", (message) => {
          if (message.payload === undefined) return
          const notification = { processId: message.processId, channel: message.channel, payload: message.payload }
          for (const s of this.subscribers) if (s.channel === message.channel) s.onNotification(notification)
        })
        session!.onLost = (lost) => this.lost(lost)
        resolve(session!)
      })
    )
  }

  /** The shared session broke: every subscriber fails; the next one opens a new session. */
  private lost(session: Session): void {
    if (this.session !== session) return
    this.session = undefined
    this.channels.clear()
    const error = new CoreError("ConnectionLost", "the LISTEN connection was lost", session.lost)
    const failed = [...this.subscribers]
    this.subscribers.clear()
    for (const s of failed) s.onFail(error)
  }

  private async unsubscribe(subscriber: Subscriber): Promise<void> {
    if (!this.subscribers.delete(subscriber)) return
    const left = (this.channels.get(subscriber.channel) ?? 1) - 1
    if (left > 0) {
      this.channels.set(subscriber.channel, left)
      return
    }
    this.channels.delete(subscriber.channel)
    const session = this.session
    if (session === undefined) return
    if (this.channels.size === 0) return this.closeIfUnused()
    // UNLISTEN within a deadline; a session that does not answer is closed (terminated) and every
    // subscriber still on it fails.
    const done = await session.runBounded(
      `UNLISTEN ${Pg.escapeIdentifier(subscriber.channel)}`,
      session.config.deadlines.rollback,
      (error) => !error
    )
    if (!done) await this.unresponsive(session)
  }

  /** The shared session did not answer in time: it is closed, and every subscriber still on it fails. */
  private async unresponsive(session: Session): Promise<void> {
    this.lost(session)
    await this.pool.closeDedicated(session)
  }

  private async closeIfUnused(): Promise<void> {
    const session = this.session
    if (session !== undefined && this.channels.size === 0) await this.close(session)
  }

  private async close(session: Session): Promise<void> {
    if (this.session === session) {
      this.session = undefined
      this.channels.clear()
    }
    await this.pool.closeDedicated(session)
  }
}
