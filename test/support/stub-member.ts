/**
 * A pool member with nothing behind it: always clean and settled, released as is. The pool tests
 * without a database (test/pool-stub.test.ts) extend it to record what the pool does; the pool
 * overhead benchmark (bench/pool-overhead.ts) uses it as it is.
 */
import type { Holder } from "../../src/core/errors.js"
import type { Member, Place } from "../../src/core/pool.js"
import type { ReleaseOutcome } from "../../src/core/session.js"

export class StubMember implements Member {
  place: Place = "new"
  lost: unknown = undefined
  revoked: string | undefined = undefined
  expiresAt = Number.POSITIVE_INFINITY
  idleSince = Date.now()
  readonly createdAt = Date.now()
  cancelledDuringLease = false
  beginPending = false
  onLost: ((member: any) => void) | undefined = undefined
  clean = true
  readonly settled = true
  leasedAt = 0
  validatedAt = 0
  holder: Holder | undefined = undefined
  leakReported = false
  constructor(readonly pid: number) {}
  running(): string | undefined {
    return undefined
  }
  validate(): Promise<boolean> {
    return Promise.resolve(true)
  }
  release(): Promise<ReleaseOutcome> {
    return Promise.resolve("reused")
  }
  close(): Promise<void> {
    return Promise.resolve()
  }
  terminate(): Promise<void> {
    return Promise.resolve()
  }
  abort(): void {}
}
