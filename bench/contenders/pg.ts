/**
 * Raw `pg` Pool (`pool.query`, and `pool.connect` for transactions), library defaults.
 *
 * Nothing in `pg` can cancel a query, so "interrupting" an operation means what a user of promises
 * does (a timeout, a race): stop waiting for it. The caller is unblocked at once, but the statement
 * keeps running and keeps its connection, and an abandoned transaction still commits. `extra()`
 * reports what became of the abandoned operations: how long after the abandon they settled, and how.
 */
import pg from "pg"
import type { OpKind } from "../lib/driver.mjs"
import { percentiles } from "../lib/stats.js"
import type { ContenderAdapter } from "../lib/worker-core.mjs"
import { packageVersion } from "./versions.js"

const ROW = "SELECT id, name, balance FROM bench_accounts WHERE id = $1"

const transaction = async (pool: pg.Pool, id: number): Promise<void> => {
  const client = await pool.connect()
  try {
    await client.query("BEGIN")
    await client.query("SELECT balance FROM bench_accounts WHERE id = $1", [id])
    await client.query("UPDATE bench_accounts SET balance = balance + 1 WHERE id = $1", [id])
    await client.query("COMMIT")
  } catch (error) {
    try {
      await client.query("ROLLBACK")
    } catch (rollbackError) {
      client.release(rollbackError as Error)
      throw error
    }
    client.release()
    throw error
  }
  client.release()
}

let pool: pg.Pool | undefined
let rows = 1000
let abandoned = { count: 0, completed: 0, failed: 0, pending: 0, settleMs: [] as Array<number> }

const run = (op: OpKind, rng: () => number): Promise<unknown> => {
  const p = pool!
  switch (op) {
    case "select1":
      return p.query("SELECT 1 AS one")
    case "row":
      return p.query(ROW, [1 + Math.floor(rng() * rows)])
    case "tx":
      return transaction(p, 1 + Math.floor(rng() * rows))
    case "sleep":
      return p.query("SELECT pg_sleep(0.01)")
  }
}

export const adapter: ContenderAdapter = {
  name: "pg Pool",
  versions: { pg: packageVersion("pg") },
  async setup(args) {
    rows = args.rows
    pool = new pg.Pool({ connectionString: args.url, max: args.poolSize, application_name: args.appName })
    // An idle client's error (a terminated backend) must not crash the worker.
    pool.on("error", () => {})
  },
  async check() {
    const p = pool!
    const select1 = (await p.query("SELECT 1 AS one")).rows[0]?.one
    const row = (await p.query(ROW, [42])).rows[0]
    await transaction(p, 7)
    return { select1, row, txId: 7 }
  },
  start(op, rng, onDone) {
    let abandonedAt = 0
    run(op, rng).then(
      () => {
        if (abandonedAt === 0) return onDone("ok")
        abandoned.completed++
        abandoned.pending--
        abandoned.settleMs.push(performance.now() - abandonedAt)
      },
      (error) => {
        if (abandonedAt === 0) return onDone("error", error)
        abandoned.failed++
        abandoned.pending--
        abandoned.settleMs.push(performance.now() - abandonedAt)
      }
    )
    return {
      interrupt: () => {
        abandonedAt = performance.now()
        abandoned.count++
        abandoned.pending++
        onDone("interrupted")
      }
    }
  },
  resetExtra() {
    abandoned = { count: 0, completed: 0, failed: 0, pending: 0, settleMs: [] }
  },
  extra() {
    return {
      interruption: "abandon (pg cannot cancel: the statement runs on and keeps its connection)",
      abandoned: abandoned.count,
      abandonedThenCompleted: abandoned.completed,
      abandonedThenFailed: abandoned.failed,
      abandonedStillRunning: abandoned.pending,
      abandonedSettleMs: percentiles(abandoned.settleMs)
    }
  },
  async teardown() {
    const p = pool
    pool = undefined
    await p?.end()
  }
}
