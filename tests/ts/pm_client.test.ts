// Exercises the generated TypeScript client (gen/ts) against a live PM:
// PM_URL when given, else a pm binary built from this repo and started on a
// free loopback port with its embedded defaults.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { create } from "@bufbuild/protobuf";

import { PackageService } from "../../gen/ts/oaas/pm/v1/package_service_pb.js";
import { CatalogService } from "../../gen/ts/oaas/pm/v1/catalog_service_pb.js";
import { ClusterService } from "../../gen/ts/oaas/pm/v1/cluster_service_pb.js";
import { DeploymentService } from "../../gen/ts/oaas/pm/v1/deployment_service_pb.js";
import { ClassRuntimeService } from "../../gen/ts/oaas/pm/v1/runtime_service_pb.js";
import {
  ConsistencyModel,
  FunctionType,
  OPackageSchema,
  type OPackage,
} from "../../gen/ts/oaas/pm/v1/package_pb.js";

let server: ChildProcess | undefined;
let baseUrl = process.env.PM_URL ?? "";

async function startPM(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "pm-ts-"));
  const bin = process.env.PM_BIN ?? join(dir, "pm");
  if (!process.env.PM_BIN) {
    execFileSync("go", ["build", "-o", bin, "./cmd/pm"], { stdio: "inherit" });
  }
  server = spawn(bin, [], {
    env: {
      ...process.env,
      SERVER_HOST: "127.0.0.1",
      SERVER_PORT: "0",
      METRICS_PORT: "0",
      STORAGE_TYPE: "memory",
      LOG_FORMAT: "json",
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const lines = createInterface({ input: server.stderr! });
  return await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("pm did not report its address within 30s")), 30_000);
    server!.once("exit", (code) => reject(new Error(`pm exited early with ${code}`)));
    lines.on("line", (line) => {
      try {
        const rec = JSON.parse(line);
        if (rec.msg === "pm listening") {
          clearTimeout(timer);
          resolve(`http://${rec.addr}`);
        }
      } catch {
        // not a log record
      }
    });
  });
}

before(async () => {
  if (!baseUrl) baseUrl = await startPM();
});

after(() => {
  server?.kill("SIGTERM");
});

function samplePackage(name: string): OPackage {
  return create(OPackageSchema, {
    name,
    version: "1.0.0",
    metadata: { author: "ts-client", tags: ["ts", "demo"] },
    functions: [
      {
        key: "Counter.incr",
        functionType: FunctionType.CUSTOM,
        provisionConfig: { containerImage: "registry.local/counter:1", port: 8080, memoryRequest: "64Mi" },
        config: { MODE: "fast" },
      },
    ],
    classes: [
      {
        key: "Counter",
        stateSpec: { consistencyModel: ConsistencyModel.STRONG },
        functionBindings: [{ name: "incr", functionKey: "Counter.incr" }],
      },
    ],
  });
}

const transports: Record<string, () => Transport> = {
  connect: () => createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  "connect-h2": () => createConnectTransport({ baseUrl, httpVersion: "2" }),
  grpc: () => createGrpcTransport({ baseUrl }),
};

for (const [protocol, transport] of Object.entries(transports)) {
  describe(`generated client over ${protocol}`, () => {
    let packages: Client<typeof PackageService>;
    let catalog: Client<typeof CatalogService>;
    const name = `ts-${protocol}`;

    before(() => {
      const t = transport();
      packages = createClient(PackageService, t);
      catalog = createClient(CatalogService, t);
    });

    test("creates, reads, lists, updates and deletes a package", async () => {
      const created = await packages.createPackage({ package: samplePackage(name) });
      assert.equal(created.result?.id, name);
      assert.equal(created.result?.status, "created");
      assert.equal(created.revision, "1");
      assert.ok(created.package?.metadata?.createdAt, "server sets created_at");

      const got = await packages.getPackage({ name });
      assert.equal(got.package?.name, name);
      assert.equal(got.package?.classes[0].stateSpec?.consistencyModel, ConsistencyModel.STRONG);
      assert.equal(got.package?.functions[0].provisionConfig?.port, 8080);
      assert.deepEqual(got.package?.functions[0].config, { MODE: "fast" });

      const listed = await packages.listPackages({ tags: ["ts"], namePattern: protocol });
      assert.deepEqual(
        listed.items.map((p) => p.name),
        [name],
      );

      const classes = await catalog.listClasses({ packageName: name });
      assert.deepEqual(
        classes.items.map((c) => c.key),
        ["Counter"],
      );

      await assert.rejects(
        packages.updatePackage({ name, package: got.package, expectedRevision: "99" }),
        (err: unknown) => ConnectError.from(err).code === Code.Aborted,
      );
      const updated = await packages.updatePackage({ name, package: got.package, expectedRevision: got.revision });
      assert.equal(updated.revision, "2");

      await packages.deletePackage({ name });
      await assert.rejects(packages.getPackage({ name }), (err: unknown) => ConnectError.from(err).code === Code.NotFound);
    });

    test("deploys a class to the embedded default cluster and removes it", async () => {
      const t = transport();
      const clusters = createClient(ClusterService, t);
      const deployments = createClient(DeploymentService, t);
      const runtimes = createClient(ClassRuntimeService, t);
      const pkg = `${name}-deploy`;
      await packages.createPackage({ package: samplePackage(pkg) });

      const known = await clusters.listClusters({});
      assert.ok(
        known.items.some((c) => c.name === "default"),
        "embedded default cluster listed",
      );

      const key = `${pkg}-d`;
      const created = await deployments.createDeployment({
        deployment: { key, packageName: pkg, classKey: "Counter", targetEnvs: ["default"] },
        idempotencyKey: `${key}-once`,
      });
      assert.ok(created.result?.id, "unit id returned");
      // STRONG consistency forces at least 3 replicas.
      assert.ok((created.deployment?.status?.replicationFactor ?? 0) >= 3);

      const mappings = await deployments.getClusterMappings({ key });
      assert.equal(mappings.clusterMappings["default"], created.result?.id);
      const listed = await runtimes.listClassRuntimes({ packageName: pkg });
      assert.deepEqual(
        listed.items.map((r) => r.id),
        [created.result?.id],
      );

      await deployments.deleteDeployment({ key });
      await assert.rejects(
        deployments.getDeployment({ key }),
        (err: unknown) => ConnectError.from(err).code === Code.NotFound,
      );
      await packages.deletePackage({ name: pkg });
    });

    test("rejects an invalid package with InvalidArgument naming the field", async () => {
      const bad = samplePackage(`${name}-bad`);
      bad.classes[0].functionBindings[0].functionKey = "missing";
      await assert.rejects(packages.createPackage({ package: bad }), (err: unknown) => {
        const e = ConnectError.from(err);
        return e.code === Code.InvalidArgument && e.rawMessage.includes('"missing"');
      });
    });
  });
}
