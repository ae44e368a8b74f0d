// A consumer of the packed @oaas/pm-client: pack.test.ts copies this file
// into a fresh directory where only the tarball and its peers are installed,
// and runs it there, so it can import nothing but installed packages. It
// prints one JSON report on stdout; the test makes the assertions.
//
// Environment: PM_URL (required), PM_TOKEN (when PM requires one),
// PM_NAME (a prefix for the packages it creates), PM_MODULES (a JSON list of
// the generated modules' subpaths, e.g. "oaas/pm/v1/package_pb").
import * as root from "@oaas/pm-client";
import { bearerToken, createPmClients, pmServices, OPackageSchema, FunctionType } from "@oaas/pm-client";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";

const baseUrl = process.env.PM_URL;
const token = process.env.PM_TOKEN;
const prefix = process.env.PM_NAME ?? "pack";
const modules = JSON.parse(process.env.PM_MODULES ?? "[]");

const report = { modules: {}, pmServices: Object.values(pmServices).map((s) => s.typeName), calls: {} };

// Every generated module through its subpath export: what it exports, which
// of that the root entry lacks (or holds as a different object), its services.
for (const path of modules) {
  const mod = await import(`@oaas/pm-client/${path}`);
  const names = Object.keys(mod);
  report.modules[path] = {
    exports: names.length,
    notInRoot: names.filter((n) => root[n] !== mod[n]),
    services: Object.values(mod)
      .filter((v) => v?.kind === "service")
      .map((s) => s.typeName),
  };
}

const transports = {
  connect: (interceptors) => createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors }),
  grpc: (interceptors) => createGrpcTransport({ baseUrl, interceptors }),
  "grpc-web": (interceptors) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors }),
};

const outcome = (promise) =>
  promise.then(
    () => "ok",
    (err) => Code[ConnectError.from(err).code],
  );

function samplePackage(name) {
  return create(OPackageSchema, {
    name,
    version: "1.0.0",
    metadata: { author: "pack-smoke" },
    functions: [
      {
        key: "Echo.run",
        functionType: FunctionType.CUSTOM,
        provisionConfig: { containerImage: "registry.local/echo:1", port: 8080 },
      },
    ],
    classes: [{ key: "Echo", functionBindings: [{ name: "run", functionKey: "Echo.run" }] }],
  });
}

for (const [protocol, transport] of Object.entries(transports)) {
  const name = `${prefix}-${protocol}`;
  const call = {};
  if (token) {
    const anonymous = createPmClients(transport([]));
    call.withoutToken = {
      createPackage: await outcome(anonymous.packages.createPackage({ package: samplePackage(`${name}-anon`) })),
      listClusters: await outcome(anonymous.clusters.listClusters({})),
    };
  }
  const pm = createPmClients(transport(token ? [bearerToken(token)] : []));
  const created = await pm.packages.createPackage({ package: samplePackage(name) });
  const got = await pm.packages.getPackage({ name });
  const clusters = await pm.clusters.listClusters({});
  call.created = { id: created.result?.id, status: created.result?.status, revision: created.revision };
  call.read = {
    name: got.package?.name,
    version: got.package?.version,
    functionKeys: got.package?.functions.map((f) => f.key),
    port: got.package?.functions[0]?.provisionConfig?.port,
  };
  call.clusters = clusters.items.map((c) => c.name);
  if (token) {
    call.anonymousPackage = await outcome(pm.packages.getPackage({ name: `${name}-anon` }));
  }
  report.calls[protocol] = call;
}

console.log(JSON.stringify(report));
