/**
 * postgres.js (porsager/postgres), library defaults (named prepared statements on).
 *
 * Interruption is what its users have: `query.cancel()` on the statement in flight (a protocol
 * CancelRequest, or removal from the queue when it has not been sent yet). In a transaction, the
 * statement in flight is cancelled and no further statement is started, so `sql.begin` rolls back.
 * The interruption latency runs from `cancel()` to the moment the operation's promise settles.
 */
import postgres from "postgres"
import type { OpKind } from "../lib/driver.mjs"
import type { ContenderAdapter } from "../lib/worker-core.mjs"
import { packageVersion } from "./versions.js"

type Sql = postgres.Sql<{}>
type Pending = { cancel(): void }

let sql: Sql | undefined
let rows = 1000
let cancelOutcomes = new Map<string, number>()

class Cancelled extends Error {
  readonly code = "cancelled-before-next-statement"
}

/** Runs one operation; `current` is set to the statement in flight so that it can be cancelled. */
const run = (op: OpKind, id: number, state: { current: Pending | undefined; cancelled: boolean }) => {
  const s = sql!
  const track = <T extends Pending>(q: T): T => {
    state.current = q
    return q
  }
  switch (op) {
    case "select1":
      return track(s`SELECT 1 AS one`)
    case "row":
      return track(s`SELECT id, name, balance FROM bench_accounts WHERE id = ${id}`)
    case "sleep":
      return track(s`SELECT pg_sleep(0.01)`)
    case "tx":
      return s.begin(async (tx) => {
        await track(tx`SELECT balance FROM bench_accounts WHERE id = ${id}`)
        if (state.cancelled) throw new Cancelled("cancelled")
        await track(tx`UPDATE bench_accounts SET balance = balance + 1 WHERE id = ${id}`)
        if (state.cancelled) throw new Cancelled("cancelled")
      })
  }
}

export const adapter: ContenderAdapter = {
  name: "postgres.js",
  versions: { postgres: packageVersion("postgres") },
  async setup(args) {
    rows = args.rows
    sql = postgres(args.url, {
      max: args.poolSize,
      connection: { application_name: args.appName },
      onnotice: () => {}
    })
  },
  async check() {
    const s = sql!
    const select1 = (await s`SELECT 1 AS one`)[0]?.one
    const row = (await s`SELECT id, name, balance FROM bench_accounts WHERE id = ${42}`)[0]
    await run("tx", 7, { current: undefined, cancelled: false })
    return { select1, row, txId: 7 }
  },
  start(op, rng, onDone) {
    const state: { current: Pending | undefined; cancelled: boolean } = { current: undefined, cancelled: false }
    run(op, op === "row" || op === "tx" ? 1 + Math.floor(rng() * rows) : 0, state).then(
      () => onDone("ok"),
      (error: { code?: unknown }) => {
        if (!state.cancelled) return onDone("error", error)
        const code = String(error?.code ?? "no code")
        cancelOutcomes.set(code, (cancelOutcomes.get(code) ?? 0) + 1)
        onDone("interrupted")
      }
    )
    return {
      interrupt: () => {
        state.cancelled = true
        state.current?.cancel()
      }
    }
  },
  resetExtra() {
    cancelOutcomes = new Map()
  },
  extra() {
    return {
      interruption: "query.cancel() on the statement in flight",
      cancelledWith: Object.fromEntries(cancelOutcomes)
    }
  },
  async teardown() {
    const s = sql
    sql = undefined
    await s?.end({ timeout: 5 })
  }
}
