/**
 * The tests' out-of-band view of the server: pg-warden's `Observer` (a plain `pg` session, never a
 * pool of the code under test, reading `pg_stat_activity`), plus what only tests do: SIGSTOP and
 * SIGCONT backend processes of the server running on this machine. Effect-free, so the tests of
 * every edition (effect4/ too) use it.
 */
import { randomBytes } from "node:crypto"
import { type Backend, Observer, type WaitOptions } from "../../src/core/observer.js"

export type { Backend }
export type WaitForOptions = WaitOptions

export class Admin extends Observer {
  /** SIGSTOP a backend process (the server runs on this machine; we are root). */
  freeze(pid: number): void {
    process.kill(pid, "SIGSTOP")
  }

  /** SIGCONT a backend process frozen with `freeze`. */
  thaw(pid: number): void {
    process.kill(pid, "SIGCONT")
  }
}

/** `warden-test-${prefix}-${random}`, shortened (prefix first) to PostgreSQL's 63-byte identifier limit. */
export const uniqueAppName = (prefix: string): string => {
  const random = randomBytes(6).toString("hex")
  const fixed = "warden-test-".length + 1 + random.length
  const room = Math.max(0, 63 - fixed)
  const safePrefix = prefix.replace(/[^\x20-\x7e]/g, "_").slice(0, room)
  return `warden-test-${safePrefix}-${random}`
}
