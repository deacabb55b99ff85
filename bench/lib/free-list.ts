/**
 * The reference pool for the overhead benchmark: a plain free list with a FIFO queue of waiters and
 * direct hand-off (a released connection goes straight to the oldest waiter, nobody else is woken).
 * Waiting is interruptible; a waiter interrupted after it was served gives the connection back.
 */
import * as Effect from "effect/Effect"

interface Waiter<A> {
  served: boolean
  cancelled: boolean
  value: A | undefined
  resume: ((effect: Effect.Effect<A>) => void) | undefined
}

export class FreeList<A> {
  private readonly free: Array<A>
  private waiters: Array<Waiter<A>> = []
  private head = 0

  constructor(items: ReadonlyArray<A>) {
    this.free = [...items]
  }

  readonly acquire: Effect.Effect<A> = Effect.suspend(() => {
    const item = this.free.pop()
    if (item !== undefined) return Effect.succeed(item)
    const waiter: Waiter<A> = { served: false, cancelled: false, value: undefined, resume: undefined }
    this.waiters.push(waiter)
    return Effect.async<A>((resume) => {
      if (waiter.served) return resume(Effect.succeed(waiter.value!))
      waiter.resume = resume
      return Effect.sync(() => {
        if (waiter.served) this.release(waiter.value!)
        else waiter.cancelled = true
      })
    })
  })

  release(item: A): void {
    while (this.head < this.waiters.length) {
      const waiter = this.waiters[this.head]!
      this.waiters[this.head++] = undefined as unknown as Waiter<A>
      if (this.head > 1024 && this.head * 2 > this.waiters.length) {
        this.waiters = this.waiters.slice(this.head)
        this.head = 0
      }
      if (waiter.cancelled) continue
      waiter.served = true
      waiter.value = item
      waiter.resume?.(Effect.succeed(item))
      return
    }
    this.free.push(item)
  }
}
