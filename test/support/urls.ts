/**
 * Connection-URL helpers shared by the test files: a URL with some of its parts changed, and whether
 * the server behind a URL asks for passwords. Free of pg-warden's own modules, so that the CLI tests
 * (which run pg-warden only as a child process) can use them too.
 */
import pg from "pg"
import { uniqueAppName } from "./admin.js"

/** `url` with `change` applied to its parsed form (host, port, path, credentials, …). */
export const withUrl = (url: string, change: (parsed: URL) => void): string => {
  const parsed = new URL(url)
  change(parsed)
  return parsed.toString()
}

/** `url` with query parameters added, each value percent-encoded (a space is `%20`, which libpq's `options` needs). */
export const withParams = (base: string, params: Record<string, string>): string =>
  `${base}${base.includes("?") ? "&" : "?"}${Object.entries(params)
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`)
    .join("&")}`

/** True when the server at `url` rejects a wrong password with 28P01 (false when it trusts everyone). */
export const rejectsWrongPassword = async (url: string): Promise<boolean> => {
  const client = new pg.Client({
    connectionString: withUrl(url, (u) => {
      u.password = "definitely-wrong"
    }),
    application_name: uniqueAppName("auth-probe"),
    connectionTimeoutMillis: 5_000
  })
  client.on("error", () => {})
  try {
    await client.connect()
    return false
  } catch (error) {
    return (error as { code?: unknown }).code === "28P01"
  } finally {
    await client.end().catch(() => undefined)
  }
}
