/**
 * Pool overhead without a database: acquire a connection, hold it for one turn of the event loop,
 * release it, at 1, 8 and 64 fibers on a pool of 8 stub connections. Implementations interleaved
 * round by round; medians of rounds; ratios against the plain free list, per round.
 *
 *   node --expose-gc --import tsx bench/pool-overhead.ts [--quick] [--rounds N] [--duration MS] [--json]
 *
 * - free list: lib/free-list.ts, FIFO hand-off, via `Effect.acquireUseRelease` (no Scope) and via
 *   `Effect.scoped(Effect.acquireRelease(…))` (the cost of a Scope per use, for comparison);
 * - effect Pool: `effect/Pool` (`Pool.make`, size 8) with `Effect.scoped(Pool.get(pool))`;
 * - pg-warden pool: src/core/pool.ts itself over stub members (its `Connector` seam), acquired and
 *   released the way pooled statements and transactions do (`uninterruptibleMask`, only the wait
 *   interruptible, no Scope);
 * - pg-warden reserve: the public API, `Effect.scoped(sql.reserve)` on `WardenClient.make`, whose
 *   sessions are `pg` clients over an in-memory stub server (lib/stub-stream.ts, through the `stream`
 *   option): reserve and release send nothing on the wire, so this is the pool's acquire/release path
 *   plus the Scope that `reserve` requires.
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import type { SqlClient } from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Pool from "effect/Pool"
import * as Scope from "effect/Scope"
import { Pool as WardenPool } from "../src/core/pool.js"
import { WardenClient } from "../src/index.js"
import * as Core from "../src/internal/effect.js"
import { StubMember } from "../test/support/stub-member.js"
import { FreeList } from "./lib/free-list.js"
import { median, minMax, percentiles } from "./lib/stats.js"
import { StubPgStream } from "./lib/stub-stream.js"

const argv = process.argv.slice(2)
const option = (name: string): number | undefined => {
  const i = argv.indexOf(name)
  return i >= 0 && argv[i + 1] !== undefined ? Number(argv[i + 1]) : undefined
}
const quick = argv.includes("--quick")
const rounds = option("--rounds") ?? (quick ? 2 : 5)
const durationMs = option("--duration") ?? (quick ? 300 : 1_000)
const warmupMs = quick ? 100 : 300
const POOL_SIZE = 8
const FIBERS = [1, 8, 64]

/** One turn of the event loop, like a statement's reply arriving on a socket. */
const use: Effect.Effect<void> = Effect.async<void>((resume) => {
  setImmediate(() => resume(Effect.void))
})

interface Instance {
  readonly op: Effect.Effect<void, unknown>
  readonly close: () => Promise<void>
}

interface Impl {
  readonly key: string
  readonly label: string
  readonly make: () => Promise<Instance>
}

interface StubConnection {
  readonly id: number
}
const stubs = (): Array<StubConnection> => Array.from({ length: POOL_SIZE }, (_, id) => ({ id }))

const scoped = async <A, E>(
  make: Effect.Effect<A, E, Scope.Scope>
): Promise<{ value: A; close: () => Promise<void> }> => {
  const scope = Effect.runSync(Scope.make())
  const value = await Effect.runPromise(Scope.extend(make, scope))
  return { value, close: () => Effect.runPromise(Scope.close(scope, Exit.void)) }
}

const impls: ReadonlyArray<Impl> = [
  {
    key: "freelist",
    label: "free list (FIFO hand-off), acquireUseRelease",
    make: async () => {
      const list = new FreeList(stubs())
      return {
        op: Effect.acquireUseRelease(
          list.acquire,
          () => use,
          (c) => Effect.sync(() => list.release(c))
        ),
        close: async () => {}
      }
    }
  },
  {
    key: "freelist-scoped",
    label: "free list (FIFO hand-off), Effect.scoped",
    make: async () => {
      const list = new FreeList(stubs())
      const acquire = Effect.acquireRelease(list.acquire, (c) => Effect.sync(() => list.release(c)))
      return { op: Effect.scoped(Effect.zipRight(acquire, use)), close: async () => {} }
    }
  },
  {
    key: "effect-pool",
    label: "effect Pool, Effect.scoped(Pool.get)",
    make: async () => {
      let next = 0
      const { value: pool, close } = await scoped(
        Pool.make({ acquire: Effect.sync(() => ({ id: next++ })), size: POOL_SIZE })
      )
      return { op: Effect.scoped(Effect.zipRight(Pool.get(pool), use)), close }
    }
  },
  {
    key: "warden-pool",
    label: "pg-warden pool (stub members), as pooled statements use it",
    make: async () => {
      let next = 0
      const pool = new WardenPool<StubMember>(
        {
          session: {
            client: {},
            applicationName: "bench-pool-overhead",
            connectTimeoutMs: 1000,
            deadlines: { cancel: 100, drain: 100, rollback: 100, reset: 100, terminate: 100 },
            startupParameters: [],
            statementCacheSize: 0,
            cancelProbe: false,
            alwaysReset: false
          },
          maxConnections: POOL_SIZE,
          minConnections: POOL_SIZE,
          acquireTimeoutMs: 60_000,
          idleTimeoutMs: 60_000,
          maxLifetimeMs: 0
        },
        (_config, onDone) => {
          queueMicrotask(() => onDone(undefined, new StubMember(next++)))
          return () => {}
        }
      )
      // The pool opens its minimum in the background: wait until all of them are idle.
      while (pool.snapshot().idle < POOL_SIZE) await new Promise((resolve) => setImmediate(resolve))
      const op = Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Core.acquire(pool, restore), (member) =>
          Effect.ensuring(restore(use), Core.release(pool, member))
        )
      )
      return { op, close: () => pool.close() }
    }
  },
  {
    key: "warden",
    label: "pg-warden, Effect.scoped(sql.reserve) (public API, stub server)",
    make: async () => {
      const { value: client, close } = await scoped(
        Effect.provide(
          WardenClient.make({
            stream: () => new StubPgStream(),
            maxConnections: POOL_SIZE,
            minConnections: POOL_SIZE,
            serverSafety: false,
            applicationName: "bench-pool-overhead"
          }),
          Reactivity.layer
        )
      )
      const sql: SqlClient = client
      // Open every connection first, so the measured part is acquire/release only.
      await Effect.runPromise(
        Effect.all(
          Array.from({ length: POOL_SIZE }, () => Effect.scoped(Effect.zipRight(sql.reserve, use))),
          { concurrency: "unbounded", discard: true }
        )
      )
      return { op: Effect.scoped(Effect.zipRight(sql.reserve, use)), close }
    }
  }
]

interface Sample {
  readonly opsPerSec: number
  readonly p50Us: number | null
  readonly p99Us: number | null
}

/** `fibers` fibers each loop acquire/use/release until the time is up; throughput over the real elapsed time. */
const measure = (op: Effect.Effect<void, unknown>, fibers: number, ms: number, record: boolean) =>
  Effect.suspend(() => {
    const latencies: Array<number> = []
    let ops = 0
    const started = performance.now()
    const end = started + ms
    const worker = Effect.gen(function* () {
      while (performance.now() < end) {
        const t = performance.now()
        yield* op
        ops++
        if (record) latencies.push((performance.now() - t) * 1000)
      }
    })
    return Effect.map(
      Effect.all(
        Array.from({ length: fibers }, () => worker),
        { concurrency: "unbounded", discard: true }
      ),
      (): Sample => {
        const p = percentiles(latencies)
        return { opsPerSec: ops / ((performance.now() - started) / 1000), p50Us: p.p50, p99Us: p.p99 }
      }
    )
  })

const main = async () => {
  const samples = new Map<string, Array<Sample & { round: number }>>()
  for (const fibers of FIBERS) {
    for (let round = 1; round <= rounds; round++) {
      for (const impl of impls) {
        const instance = await impl.make()
        try {
          await Effect.runPromise(measure(instance.op, fibers, warmupMs, false))
          ;(globalThis as { gc?: () => void }).gc?.()
          const sample = await Effect.runPromise(measure(instance.op, fibers, durationMs, true))
          const key = `${impl.key}/${fibers}`
          samples.set(key, [...(samples.get(key) ?? []), { ...sample, round }])
          process.stderr.write(
            `[pool-overhead] fibers=${fibers} round ${round} ${impl.key}: ${Math.round(sample.opsPerSec)} /s\n`
          )
        } finally {
          await instance.close()
        }
      }
    }
  }
  const rows = FIBERS.flatMap((fibers) =>
    impls.map((impl) => {
      const mine = samples.get(`${impl.key}/${fibers}`) ?? []
      const reference = samples.get(`freelist/${fibers}`) ?? []
      const ratios = mine.flatMap((s) => {
        const ref = reference.find((r) => r.round === s.round)
        return ref && ref.opsPerSec > 0 ? [s.opsPerSec / ref.opsPerSec] : []
      })
      return {
        impl: impl.label,
        key: impl.key,
        fibers,
        opsPerSec: median(mine.map((s) => s.opsPerSec)),
        opsRange: minMax(mine.map((s) => s.opsPerSec)),
        vsFreeList: median(ratios),
        p50Us: median(mine.map((s) => s.p50Us ?? Number.NaN)),
        p99Us: median(mine.map((s) => s.p99Us ?? Number.NaN))
      }
    })
  )
  const result = {
    meta: { poolSize: POOL_SIZE, rounds, durationMs, warmupMs, fibers: FIBERS },
    rows
  }
  if (argv.includes("--json")) {
    process.stdout.write(`${JSON.stringify(result)}\n`)
  } else {
    for (const r of rows) {
      console.log(
        `${r.impl.padEnd(68)} fibers=${String(r.fibers).padStart(2)}  ${Math.round(r.opsPerSec ?? 0)
          .toString()
          .padStart(
            8
          )} /s  ×free list ${(r.vsFreeList ?? 0).toFixed(2)}  p50 ${(r.p50Us ?? 0).toFixed(1)} µs  p99 ${(r.p99Us ?? 0).toFixed(1)} µs`
      )
    }
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
