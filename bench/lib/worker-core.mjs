// The worker side of the benchmark: one process per contender, driven by bench/run.ts over a
// line-based JSON protocol on stdin/stdout (one request per line: {id, cmd, args}; one answer per
// line: {id, ok, result | error}). Shared by bench/worker.ts (Effect 3 and promise-based contenders)
// and bench/effect4/worker.mjs (Effect 4), so every contender is measured by the same loop.
import { createInterface } from "node:readline"
import { memorySnapshot, runLoad } from "./driver.mjs"

/**
 * Serves one contender. `adapter`: { name, versions, setup(args), check(), start(op, rng, onDone),
 * teardown(), extra?() }.
 */
export const serve = (adapter) => {
  // stdout is the protocol channel: anything a library prints goes to stderr.
  const write = process.stdout.write.bind(process.stdout)
  console.log = console.error
  console.info = console.error
  console.warn = console.error
  let ready = false

  const handlers = {
    hello: async () => ({
      name: adapter.name,
      versions: adapter.versions,
      pid: process.pid,
      node: process.version,
      exposeGc: typeof globalThis.gc === "function"
    }),
    setup: async (args) => {
      const t0 = performance.now()
      await adapter.setup(args)
      ready = true
      return { ms: performance.now() - t0 }
    },
    check: async () => adapter.check(),
    run: async (spec) => {
      if (!ready) throw new Error("run before setup")
      adapter.resetExtra?.()
      const result = await runLoad(adapter, spec)
      return { ...result, extra: adapter.extra?.() ?? null, memory: memorySnapshot() }
    },
    teardown: async () => {
      const t0 = performance.now()
      ready = false
      await adapter.teardown()
      return { ms: performance.now() - t0 }
    },
    /** Memory growth: snapshots after warm-up and at each checkpoint of completed operations. */
    memory: async ({ op, clients, warmupOps, checkpoints, seed }) => {
      if (!ready) throw new Error("memory before setup")
      const t0 = performance.now()
      await runLoad(adapter, { op, clients, maxOps: warmupOps, seed })
      const snapshots = [{ ops: 0, ...memorySnapshot(), seconds: (performance.now() - t0) / 1000 }]
      let done = 0
      for (const checkpoint of checkpoints) {
        const result = await runLoad(adapter, { op, clients, maxOps: checkpoint - done, seed: seed + checkpoint })
        done += result.opsTotal
        snapshots.push({
          ops: done,
          ...memorySnapshot(),
          seconds: (performance.now() - t0) / 1000,
          collateral: result.collateral.count
        })
      }
      return { snapshots }
    },
    exit: async () => {
      setImmediate(() => process.exit(0))
      return null
    }
  }

  const lines = createInterface({ input: process.stdin })
  lines.on("line", (line) => {
    if (line.trim() === "") return
    let request
    try {
      request = JSON.parse(line)
    } catch {
      return
    }
    const handler = handlers[request.cmd]
    const answer = handler
      ? handler(request.args ?? {}).then(
          (result) => ({ id: request.id, ok: true, result }),
          (error) => ({ id: request.id, ok: false, error: String(error?.stack ?? error) })
        )
      : Promise.resolve({ id: request.id, ok: false, error: `unknown command ${request.cmd}` })
    answer.then((message) => write(`${JSON.stringify(message)}\n`))
  })
  lines.on("close", () => process.exit(0))
  process.on("unhandledRejection", (error) => console.error("[worker] unhandled rejection:", error))
}
