/**
 * The connection budget (README, "Connection budget"): what one pool may open on the server, checked from the
 * server's view (and PgBouncer's `SHOW CLIENTS`) while processes with pools of their own run interruption load.
 */
import { spawn } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, inject, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import Pg from "pg"
import { Admin, uniqueAppName } from "./support/admin.js"
import "./support/context.js"
import type { FleetWorkerArgs, FleetWorkerReport } from "./support/fleet-worker.js"
import { startProxy } from "./support/proxy.js"
import {
  configFor,
  isRunningSleep,
  open,
  promise,
  proxyTarget,
  scopedAdmin,
  waitForBackends
} from "./support/warden.js"

const url = inject("databaseUrl")
const bouncerUrl = inject("bouncerUrl")
const bouncerAdminUrl = inject("bouncerAdminUrl")

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** One process of the fleet: resolves with its report (rejects when it fails or prints none). */
const runWorker = (args: FleetWorkerArgs): Promise<FleetWorkerReport> =>
  new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        "--import",
        path.join(root, "node_modules", "tsx", "dist", "loader.mjs"),
        path.join(root, "test", "support", "fleet-worker.ts"),
        JSON.stringify(args)
      ],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] }
    )
    let out = ""
    let err = ""
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString()
    })
    child.stderr.on("data", (chunk: Buffer) => {
      err += chunk.toString()
    })
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
    child.on("exit", (code) => {
      clearTimeout(timer)
      const line = out.trim().split("\n").pop() ?? ""
      if (code === 0 && line.startsWith("{")) resolve(JSON.parse(line) as FleetWorkerReport)
      else reject(new Error(`fleet worker ${args.applicationName} exited ${code}: ${err.slice(-2_000)}`))
    })
  })

/** Samples `count` every 20 ms until `until` settles; resolves with the largest value seen. */
const maxWhile = async (count: () => Promise<number>, until: Promise<unknown>): Promise<number> => {
  let done = false
  void until.finally(() => {
    done = true
  })
  let max = 0
  while (!done) {
    max = Math.max(max, await count())
    await sleep(20)
  }
  return Math.max(max, await count())
}

/** Per pool: `maxConnections`, the cancel channel, the LISTEN session and `controlConnections` control connections. */
const budgetOf = (args: Pick<FleetWorkerArgs, "maxConnections" | "controlConnections" | "pgbouncer">) =>
  args.pgbouncer ? args.maxConnections : args.maxConnections + 1 + 1 + args.controlConnections

describe("connection budget", () => {
  it.scoped(
    "control connections are capped by controlConnections: six frozen backends are terminated two at a time",
    () =>
      Effect.gen(function* () {
        const admin = yield* scopedAdmin(url)
        const proxy = yield* Effect.acquireRelease(
          promise(() => startProxy(proxyTarget(url))),
          (p) => promise(() => p.close())
        )
        // Six statements on frozen backends: their cancels cannot settle, so each session is terminated out of band.
        // Through a proxy that delays every chunk, each control connection lives long enough to be seen.
        const atOnce = (cap: number) =>
          Effect.gen(function* () {
            const app = uniqueAppName(`budget-cap-${cap}`)
            const control = `pg-warden-control:${app}`
            const { sql, close } = yield* open(
              configFor(proxy.rewrite(url), app, {
                maxConnections: 6,
                controlConnections: cap,
                cancelChannel: false,
                terminateTimeout: 10_000
              })
            )
            const fibers = yield* Effect.forEach(Array.from({ length: 6 }), () => Effect.fork(sql`select pg_sleep(30)`))
            const running = (yield* waitForBackends(admin, app, (bs) => bs.filter(isRunningSleep).length === 6)).filter(
              isRunningSleep
            )
            for (const backend of running) admin.freeze(backend.pid)
            proxy.setMode("delay", { delayMs: 60 })
            const interrupted = Effect.runPromise(Fiber.interruptAll(fibers))
            const max = yield* promise(() =>
              maxWhile(() => admin.backends(control).then((bs) => bs.length), interrupted)
            )
            for (const backend of running) admin.thaw(backend.pid)
            proxy.setMode("pass")
            yield* close
            yield* promise(() => admin.waitForNoBackends(app, 10_000))
            return max
          })
        const capped = yield* atOnce(2)
        expect(capped, "control connections open at once with controlConnections: 2").toBeLessThanOrEqual(2)
        expect(capped).toBeGreaterThan(0)
        // The cap is what keeps it there: with room for six, more are open at once.
        const wide = yield* atOnce(6)
        expect(wide, "control connections open at once with controlConnections: 6").toBeGreaterThan(2)
      }),
    60_000
  )

  const fleet = (through: "direct" | "PgBouncer") =>
    Effect.gen(function* () {
      const processes = 3
      const run = uniqueAppName(`fleet-${through === "direct" ? "d" : "b"}`)
      const base = {
        url: through === "direct" ? url : bouncerUrl,
        maxConnections: 4,
        controlConnections: 2,
        pgbouncer: through === "PgBouncer",
        durationMs: 3_000,
        fibers: 12
      }
      const apps = Array.from({ length: processes }, (_, i) => `${run}-${i}`)
      const admin = yield* promise(() => Admin.connect(url))
      yield* Effect.addFinalizer(() => promise(() => admin.close()))
      const serverCount = (onlyBusy: boolean) =>
        admin
          .query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE (application_name LIKE $1 OR application_name LIKE $2) AND ($3::bool IS FALSE OR state <> 'idle')`,
            [`${run}-%`, `pg-warden-control:${run}-%`, onlyBusy]
          )
          .then((rows) => rows[0]?.n ?? 0)
      const bouncer = through === "PgBouncer" ? new Pg.Client({ connectionString: bouncerAdminUrl }) : undefined
      if (bouncer !== undefined) {
        bouncer.on("error", () => {})
        yield* promise(() => bouncer.connect())
        yield* Effect.addFinalizer(() => promise(() => bouncer.end().catch(() => undefined)))
      }
      const bouncerClients = () =>
        bouncer === undefined
          ? Promise.resolve(0)
          : bouncer
              .query("SHOW CLIENTS")
              .then(
                (r) => r.rows.filter((row: { application_name: string }) => row.application_name.startsWith(run)).length
              )
      const workers = Promise.all(apps.map((applicationName) => runWorker({ ...base, applicationName })))
      const [maxServer, maxClients] = yield* promise(() =>
        Promise.all([maxWhile(() => serverCount(through === "PgBouncer"), workers), maxWhile(bouncerClients, workers)])
      )
      const reports = yield* promise(() => workers)
      const stated = processes * budgetOf(base)
      expect(
        maxServer,
        `server backends of the fleet at once (${through}), stated budget ${stated}`
      ).toBeLessThanOrEqual(stated)
      if (through === "PgBouncer")
        expect(maxClients, "PgBouncer clients of the fleet at once").toBeLessThanOrEqual(stated)
      expect(maxServer + maxClients).toBeGreaterThan(0)
      for (const report of reports) {
        expect(report.failures, "failures of operations nobody interrupted").toEqual([])
        expect(report.completed).toBeGreaterThan(0)
        expect(report.interrupted).toBeGreaterThan(0)
      }
      // Nothing left once the processes are gone: no backend (through PgBouncer: none busy, no PgBouncer client).
      const deadline = Date.now() + 5_000
      while ((yield* promise(() => serverCount(through === "PgBouncer"))) > 0 && Date.now() < deadline) {
        yield* promise(() => sleep(50))
      }
      expect(yield* promise(() => serverCount(through === "PgBouncer")), "fleet backends left on the server").toBe(0)
      expect(yield* promise(bouncerClients), "fleet clients left in PgBouncer").toBe(0)
      return { maxServer, maxClients, stated }
    })

  it.scoped(
    "a fleet of three processes, each with its own pool, stays within the stated budget directly",
    () => fleet("direct"),
    90_000
  )

  it.scoped.skipIf(bouncerUrl === "")(
    `a fleet of three processes through PgBouncer stays within the stated budget${bouncerUrl === "" ? ` (skipped: ${inject("bouncerSkipped")})` : ""}`,
    () => fleet("PgBouncer"),
    90_000
  )
})
