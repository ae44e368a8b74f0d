// Exercises the generated TypeScript client (gen/ts) against a live PM:
// PM_URL when given (with PM_TOKEN as its bearer token when set), else a pm
// binary (PM_BIN, or built from this repo) started on a free loopback port
// with its embedded defaults. The bearer-token helper of the npm package
// (clients/ts/src/auth.ts) is exercised against a PM started with an API
// tokens file.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";

import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
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
import { bearerToken } from "../../clients/ts/src/auth.js";
import { cleanup, startPM, tokensFile } from "./pm.js";

let baseUrl = process.env.PM_URL ?? "";
const interceptors: Interceptor[] = process.env.PM_TOKEN ? [bearerToken(process.env.PM_TOKEN)] : [];

before(async () => {
  if (!baseUrl) baseUrl = await startPM();
});

after(cleanup);

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
  connect: () => createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors }),
  "connect-h2": () => createConnectTransport({ baseUrl, httpVersion: "2", interceptors }),
  grpc: () => createGrpcTransport({ baseUrl, interceptors }),
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

const authTransports: Record<string, (url: string, interceptors: Interceptor[]) => Transport> = {
  connect: (url, interceptors) => createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors }),
  grpc: (url, interceptors) => createGrpcTransport({ baseUrl: url, interceptors }),
};

const codeOf = (err: unknown) => Code[ConnectError.from(err).code];

describe("bearerToken against a PM with an API tokens file", () => {
  let authUrl: string;
  let editor: string;
  let viewer: string;

  before(async () => {
    const { file, tokens } = tokensFile([
      { principal: "ts-editor", role: "editor" },
      { principal: "ts-viewer", role: "viewer" },
    ]);
    [editor, viewer] = tokens.map((t) => t.token);
    authUrl = await startPM({ AUTH_TOKENS_FILE: file });
  });

  for (const [protocol, transport] of Object.entries(authTransports)) {
    test(`over ${protocol}: no or a bad token is refused, the role decides, a good token writes`, async () => {
      const clients = (interceptors: Interceptor[]) => {
        const t = transport(authUrl, interceptors);
        return { packages: createClient(PackageService, t), clusters: createClient(ClusterService, t) };
      };
      const name = `ts-auth-${protocol}`;

      const anonymous = clients([]);
      await assert.rejects(anonymous.clusters.listClusters({}), (e) => codeOf(e) === "Unauthenticated");
      await assert.rejects(
        anonymous.packages.createPackage({ package: samplePackage(name) }),
        (e) => codeOf(e) === "Unauthenticated",
      );
      const forged = clients([bearerToken(editor.replace(/^./, (c) => (c === "0" ? "1" : "0")))]);
      await assert.rejects(forged.clusters.listClusters({}), (e) => codeOf(e) === "Unauthenticated");

      // A viewer reads but cannot write packages; the refusal names the role.
      const reader = clients([bearerToken(viewer)]);
      const listed = await reader.clusters.listClusters({});
      assert.ok(listed.items.some((c) => c.name === "default"));
      await assert.rejects(reader.packages.createPackage({ package: samplePackage(name) }), (e) => {
        const err = ConnectError.from(e);
        return err.code === Code.PermissionDenied && err.rawMessage.includes("editor");
      });

      // A token source function is asked at every call.
      let asked = 0;
      const writer = clients([
        bearerToken(async () => {
          asked++;
          return `${editor}\n`;
        }),
      ]);
      const created = await writer.packages.createPackage({ package: samplePackage(name) });
      assert.equal(created.result?.id, name);
      const got = await writer.packages.getPackage({ name });
      assert.equal(got.package?.name, name);
      assert.equal(asked, 2);
      await writer.packages.deletePackage({ name });
    });
  }

  test("refuses an empty or malformed token before any call", () => {
    assert.throws(() => bearerToken(""), /token is empty/);
    assert.throws(() => bearerToken(" \n"), /token is empty/);
    assert.throws(() => bearerToken("two words"), /contains whitespace/);
  });
});
