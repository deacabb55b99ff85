/**
 * A private PostgreSQL server that accepts TCP connections only over TLS (`hostssl` in its pg_hba.conf, `hostnossl`
 * rejected), with a certificate authority and server certificates made at test time by the `openssl` command, for the
 * TLS tests (test/tls.test.ts). A CancelRequest is not subject to pg_hba.conf, so the tests also watch the bytes that
 * open every connection (the fault proxy's `openings`).
 */
import { execFileSync } from "node:child_process"
import { chmod, chown, mkdtemp, rm, writeFile } from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { type PrivateServer, startPrivateServer } from "./embedded.js"
import { unprivilegedUser } from "./pgbouncer.js"

export interface TlsServer extends PrivateServer {
  /** The certificate authority that signed the server's certificate (PEM file), for `sslrootcert`. */
  readonly caFile: string
  /** The names the server's certificate is valid for (its subjectAltName). */
  readonly names: ReadonlyArray<string>
}

const openssl = (args: ReadonlyArray<string>, cwd: string) => execFileSync("openssl", args, { cwd, stdio: "pipe" })

/** True when the `openssl` command is there (it makes the certificates). */
export const hasOpenssl = (): boolean => {
  try {
    execFileSync("openssl", ["version"], { stdio: "pipe" })
    return true
  } catch {
    return false
  }
}

/**
 * Starts the server. Its certificate is valid for `localhost` only (not for 127.0.0.1), so that `verify-full` to
 * 127.0.0.1 fails on the name while `verify-ca` and `require` connect.
 */
export const startTlsServer = async (): Promise<TlsServer> => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "pg-warden-tls-"))
  openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.crt",
      "-days",
      "2",
      "-subj",
      "/CN=pg-warden test CA"
    ],
    dir
  )
  openssl(
    ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
    dir
  )
  await writeFile(path.join(dir, "san.cnf"), "subjectAltName=DNS:localhost\n")
  openssl(
    [
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "server.crt",
      "-days",
      "2",
      "-extfile",
      "san.cnf"
    ],
    dir
  )
  await writeFile(
    path.join(dir, "pg_hba.conf"),
    [
      "local all all trust",
      "hostssl all all 127.0.0.1/32 scram-sha-256",
      "hostnossl all all 127.0.0.1/32 reject",
      "hostssl all all ::1/128 scram-sha-256",
      "hostnossl all all ::1/128 reject"
    ].join("\n") + "\n"
  )
  // The server reads these as its own user, and wants its key readable by nobody else.
  const owner = unprivilegedUser()
  if (owner !== undefined) {
    await chown(dir, owner.uid, owner.gid)
    for (const file of ["server.key", "server.crt", "ca.crt", "pg_hba.conf"])
      await chown(path.join(dir, file), owner.uid, owner.gid)
  }
  await chmod(path.join(dir, "server.key"), 0o600)
  const server = await startPrivateServer({
    flags: [
      "-c",
      "ssl=on",
      "-c",
      `ssl_cert_file=${path.join(dir, "server.crt")}`,
      "-c",
      `ssl_key_file=${path.join(dir, "server.key")}`,
      "-c",
      `hba_file=${path.join(dir, "pg_hba.conf")}`
    ]
  }).catch(async (error: unknown) => {
    await rm(dir, { recursive: true, force: true })
    throw error
  })
  return {
    ...server,
    caFile: path.join(dir, "ca.crt"),
    names: ["localhost"],
    dispose: async () => {
      await server.dispose()
      await rm(dir, { recursive: true, force: true })
    }
  }
}
