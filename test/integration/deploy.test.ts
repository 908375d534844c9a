// deploy/: the Dockerfile and the Kubernetes manifests, checked statically (no Docker engine, no cluster).
//
// Every manifest parses; each kustomization is rendered by the real `kubectl kustomize` (installed by
// scripts/test.sh); the rendered keymux container is then checked against the config embedded in its ConfigMap, which must pass
// the real `keymux --check`: probe paths and ports, the Prometheus annotations, the config mounted as a
// directory, non-root with a read-only root filesystem, and a termination grace period longer than keymux's
// preStop sleep plus its drain grace; and its security: the admin port (on the pod IP, for the probes and
// Prometheus) has a token from a Secret, /metrics shows hot keys only hashed, clients need a password from the
// same Secret (also given to the app), both mounted without subPath so rotation reaches keymux, and no secret value
// is shipped. The Dockerfile is parsed line by line: a multi-stage build on node:20-slim, a non-root USER, only
// production dependencies in the runtime stage.
import { beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import fs from 'node:fs';
import path from 'node:path';
import { builtinModules } from 'node:module';
import YAML from 'yaml';
import { makeTempDir, removeTempDir } from '../support/tmpdirs.js';

const run = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DEPLOY = path.join(ROOT, 'deploy');
const KUSTOMIZE = path.join(DEPLOY, 'kustomize');
const BIN = path.join(ROOT, 'bin/keymux.js');
const BASE = path.join(KUSTOMIZE, 'base');
const SHARED = path.join(KUSTOMIZE, 'overlays/shared');

beforeAll(() => {
  if (!fs.existsSync(path.join(ROOT, 'dist/main.js'))) {
    throw new Error('dist/ is missing: run `npm run build` first (these tests run the real `keymux --check`)');
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Kubernetes objects, loosely typed: the tests assert the shape they rely on.

type Obj = Record<string, any>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function rel(file: string): string {
  return path.relative(ROOT, file);
}

/** Every YAML document of a file, failing with file and message on any parse error or warning. */
function readDocs(file: string): unknown[] {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'));
  const out: unknown[] = [];
  for (const doc of docs) {
    const problems = [...doc.errors, ...doc.warnings];
    if (problems.length > 0) throw new Error(`${rel(file)}: ${problems.map((p) => p.message).join('; ')}`);
    const value = doc.toJS();
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

function listYaml(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) return listYaml(p);
      return /\.ya?ml$/.test(e.name) ? [p] : [];
    })
    .sort();
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering: the real `kubectl kustomize` (Debian/apt package kubectl; scripts/test.sh installs it), exactly what
// `kubectl apply -k` would apply.

/** Renders a kustomization directory into its list of objects with `kubectl kustomize DIR`. */
function render(dir: string): Obj[] {
  let out: string;
  try {
    out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error('kubectl is not installed: scripts/test.sh installs it (apt package kubectl)', { cause: err });
    }
    throw new Error(`kubectl kustomize ${rel(dir)} failed: ${(err as { stderr?: string }).stderr ?? err}`, {
      cause: err,
    });
  }
  const objects: Obj[] = [];
  for (const doc of YAML.parseAllDocuments(out)) {
    const problems = [...doc.errors, ...doc.warnings];
    if (problems.length > 0)
      throw new Error(`kubectl kustomize ${rel(dir)}: ${problems.map((p) => p.message).join('; ')}`);
    const value = doc.toJS() as unknown;
    if (isObj(value)) objects.push(value);
  }
  return objects;
}

// ---------------------------------------------------------------------------------------------------------------
// What a rendered kustomization says about keymux.

interface HostPortValue {
  host: string;
  port: number;
}
interface ResolvedConfig {
  listen: HostPortValue;
  admin: (HostPortValue & { tokenFile?: string | null; publicMetrics?: boolean }) | null;
  clients: { password: string | null; passwordFile?: string | null };
  metrics: { hotKeys: { export: string } };
  drain?: { graceS?: number; graceMs?: number };
}

interface Rendered {
  objects: Obj[];
  deployment: Obj;
  pod: Obj;
  keymux: Obj;
  configMap: Obj;
  configKey: string;
  configText: string;
  config: ResolvedConfig;
}

const distUrl = (p: string): string => pathToFileURL(path.join(ROOT, 'dist', p)).href;

async function parseKeymuxConfig(text: string, source: string): Promise<ResolvedConfig> {
  const { parseConfigText } = (await import(distUrl('config/load.js'))) as {
    parseConfigText(t: string, s: string): { config?: ResolvedConfig; errors?: string[] };
  };
  const result = parseConfigText(text, source);
  if (result.errors) throw new Error(`${source}:\n${result.errors.join('\n')}`);
  return result.config!;
}

/** keymux's container: the one named keymux (the name the README tells users to copy). */
function findKeymux(pod: Obj): Obj {
  const found = (pod.containers as Obj[]).filter((c) => c.name === 'keymux');
  if (found.length !== 1) throw new Error(`expected one container named keymux, found ${found.length}`);
  return found[0]!;
}

async function inspect(dir: string): Promise<Rendered> {
  const objects = render(dir);
  const deployments = objects.filter((o) => o.kind === 'Deployment');
  expect(deployments, `${rel(dir)}: one Deployment`).toHaveLength(1);
  const deployment = deployments[0]!;
  const pod = deployment.spec.template.spec as Obj;
  const keymux = findKeymux(pod);
  const configFile = configPathOf(keymux);
  // The mount that holds the config file: a directory above it or (wrongly, tested below) the file by subPath.
  const mount = ((keymux.volumeMounts as Obj[] | undefined) ?? []).find(
    (m) =>
      configFile.startsWith(`${String(m.mountPath).replace(/\/$/, '')}/`) || (m.mountPath === configFile && m.subPath),
  );
  if (!mount) throw new Error(`${rel(dir)}: no volumeMount of the keymux container holds ${configFile}`);
  const volume = ((pod.volumes as Obj[] | undefined) ?? []).find((v) => v.name === mount.name);
  const cmName = volume?.configMap?.name as string | undefined;
  if (!cmName) throw new Error(`${rel(dir)}: volume ${mount.name} is not a ConfigMap volume`);
  const configMap = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === cmName);
  if (!configMap) throw new Error(`${rel(dir)}: ConfigMap ${cmName} is not among the rendered objects`);
  const configKey =
    mount.mountPath === configFile ? String(mount.subPath) : path.posix.relative(String(mount.mountPath), configFile);
  const configText = configMap.data?.[configKey] as string | undefined;
  if (typeof configText !== 'string') throw new Error(`${rel(dir)}: ConfigMap ${cmName} has no key ${configKey}`);
  // A config keymux rejects is reported by the `keymux --check` test; the tests that need its values fail too.
  const source = `${rel(dir)} ConfigMap ${cmName} ${configKey}`;
  const parsed = await parseKeymuxConfig(configText, source).then(
    (c) => ({ c, err: null }),
    (err: Error) => ({ c: null, err }),
  );
  return {
    objects,
    deployment,
    pod,
    keymux,
    configMap,
    configKey,
    configText,
    get config(): ResolvedConfig {
      if (parsed.c === null) throw new Error(`the embedded keymux config is invalid: ${parsed.err!.message}`);
      return parsed.c;
    },
  };
}

/** The Dockerfile, parsed: instructions with continuation lines joined and comments dropped, split by stage. */
interface Instruction {
  line: number;
  op: string;
  args: string;
}
interface Stage {
  from: string;
  name: string | null;
  instructions: Instruction[];
}

function parseDockerfile(file: string): Stage[] {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const instructions: Instruction[] = [];
  let pending: { line: number; text: string } | null = null;
  lines.forEach((raw, i) => {
    const trimmed = raw.trim();
    if (pending === null && (trimmed === '' || trimmed.startsWith('#'))) return;
    if (pending !== null && trimmed.startsWith('#')) return; // comment lines inside a continuation are dropped
    const text = trimmed.endsWith('\\') ? trimmed.slice(0, -1) : trimmed;
    pending = pending === null ? { line: i + 1, text } : { line: pending.line, text: `${pending.text} ${text}` };
    if (!trimmed.endsWith('\\')) {
      const m = /^(\S+)\s*(.*)$/.exec(pending.text)!;
      instructions.push({ line: pending.line, op: m[1]!.toUpperCase(), args: m[2]!.trim() });
      pending = null;
    }
  });
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.op === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`deploy/Dockerfile:${ins.line}: cannot read FROM ${ins.args}`);
      stages.push({ from: m[1]!, name: m[2] ?? null, instructions: [] });
    } else if (stages.length === 0) {
      if (ins.op !== 'ARG') throw new Error(`deploy/Dockerfile:${ins.line}: ${ins.op} before the first FROM`);
    } else {
      stages[stages.length - 1]!.instructions.push(ins);
    }
  }
  return stages;
}

function execForm(ins: Instruction | undefined): string[] | null {
  if (!ins) return null;
  try {
    const v = JSON.parse(ins.args) as unknown;
    return Array.isArray(v) && v.every((x) => typeof x === 'string') ? v : null;
  } catch {
    return null;
  }
}

function imageCmd(): string[] {
  const stages = parseDockerfile(path.join(DEPLOY, 'Dockerfile'));
  const cmd = execForm(stages[stages.length - 1]!.instructions.filter((i) => i.op === 'CMD').pop());
  if (!cmd) throw new Error('deploy/Dockerfile: the final stage needs an exec-form CMD');
  return cmd;
}

/** The config file keymux reads: from the container's args, else the image's CMD. */
function configPathOf(container: Obj): string {
  const argv = (container.args as string[] | undefined) ?? imageCmd();
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--config' || argv[i] === '-c') return argv[i + 1]!;
    const m = /^--config=(.+)$/.exec(argv[i]!);
    if (m) return m[1]!;
  }
  throw new Error(`container ${container.name}: no --config in ${JSON.stringify(argv)}`);
}

/** Seconds a preStop hook sleeps: `node -e "setTimeout(()=>{},MS)"` or `sleep N`; 0 without a hook. */
function preStopSeconds(container: Obj): number {
  const pre = container.lifecycle?.preStop as Obj | undefined;
  if (!pre) return 0;
  if (pre.sleep?.seconds !== undefined) return Number(pre.sleep.seconds);
  const cmd = pre.exec?.command as string[] | undefined;
  if (!cmd) throw new Error(`container ${container.name}: preStop is neither exec nor sleep`);
  if (cmd[0] === 'sleep' && cmd.length === 2 && /^\d+$/.test(cmd[1]!)) return Number(cmd[1]);
  const m =
    cmd[0] === 'node' && cmd[1] === '-e'
      ? /^setTimeout\(\s*\(\)\s*=>\s*\{\s*\}\s*,\s*(\d+)\s*\)$/.exec(cmd[2] ?? '')
      : null;
  if (!m || cmd.length !== 3)
    throw new Error(`container ${container.name}: cannot tell how long preStop ${JSON.stringify(cmd)} sleeps`);
  return Number(m[1]) / 1000;
}

/**
 * keymux's drain grace for a config, in seconds: `drain.grace_s` once the config has it (resolved by keymux's
 * own loader, defaults included), else the built-in constant DRAIN_GRACE_MS of src/main.ts.
 */
function drainGraceSeconds(config: ResolvedConfig): number {
  if (typeof config.drain?.graceS === 'number') return config.drain.graceS;
  if (typeof config.drain?.graceMs === 'number') return config.drain.graceMs / 1000;
  const main = fs.readFileSync(path.join(ROOT, 'src/main.ts'), 'utf8');
  const m = /\bDRAIN_GRACE_MS\s*=\s*([\d_]+)\s*;/.exec(main);
  if (!m) {
    throw new Error(
      "cannot find keymux's drain grace: the resolved config has no drain.graceS and src/main.ts no " +
        '`DRAIN_GRACE_MS = N`; update drainGraceSeconds() in test/integration/deploy.test.ts',
    );
  }
  return Number(m[1]!.replace(/_/g, '')) / 1000;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** A container port given by number or by name, as a number. */
function portNumber(container: Obj, port: number | string): number {
  if (typeof port === 'number') return port;
  const named = (container.ports as Obj[] | undefined)?.find((p) => p.name === port);
  if (!named) throw new Error(`container ${container.name} has no port named ${port}`);
  return Number(named.containerPort);
}

// ---------------------------------------------------------------------------------------------------------------

describe('deploy/Dockerfile', () => {
  const stages = parseDockerfile(path.join(DEPLOY, 'Dockerfile'));
  const runtime = stages[stages.length - 1]!;
  const ops = (stage: Stage, op: string): Instruction[] => stage.instructions.filter((i) => i.op === op);

  it('is a multi-stage build, every stage FROM node:20-slim', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s.from).toBe('node:20-slim');
    expect(stages[0]!.name).not.toBeNull();
  });

  it('builds dist/ in the builder stage: npm ci (all dependencies), then the TypeScript build', () => {
    const builder = stages[0]!;
    const runs = ops(builder, 'RUN').map((i) => i.args);
    expect(runs.some((r) => /\bnpm ci\b/.test(r) && !/--omit=dev|--production/.test(r))).toBe(true);
    expect(runs.some((r) => /\bnpm run build\b/.test(r) || (/\bnpm ci\b/.test(r) && !/--ignore-scripts/.test(r)))).toBe(
      true,
    );
  });

  it('installs only production dependencies in the runtime stage, and builds nothing there', () => {
    const runs = ops(runtime, 'RUN').map((i) => i.args);
    const installs = runs.filter((r) => /\bnpm (ci|install|i)\b/.test(r));
    expect(installs.length).toBeGreaterThan(0);
    for (const r of installs) {
      expect(r).toMatch(/\bnpm ci\b/);
      expect(r).toMatch(/--omit=dev\b/);
      expect(r).toMatch(/--ignore-scripts\b/); // `prepare` would run tsc, which is a dev dependency
    }
    expect(runs.some((r) => /\bnpm run\b|\btsc\b/.test(r))).toBe(false);
    // node_modules never comes from the builder, which holds the dev dependencies too
    for (const c of ops(runtime, 'COPY')) expect(c.args).not.toMatch(/node_modules/);
  });

  it('copies dist/ from the builder, bin/ and package.json, and no source', () => {
    const copies = ops(runtime, 'COPY').map((i) => i.args);
    const builderName = stages[0]!.name!;
    expect(copies.some((c) => new RegExp(`^--from=${builderName}\\s+\\S*/dist\\s`).test(c))).toBe(true);
    expect(copies.some((c) => /^bin\s/.test(c))).toBe(true);
    expect(copies.some((c) => /(^|\s)package\.json(\s|$)/.test(c))).toBe(true);
    expect(copies.some((c) => /(^|\s)(src|test)(\/|\s)/.test(c))).toBe(false);
  });

  it('runs as a non-root user, set after every RUN of the runtime stage', () => {
    const users = ops(runtime, 'USER');
    expect(users.length).toBeGreaterThan(0);
    const user = users[users.length - 1]!;
    const [uid] = user.args.split(':');
    expect(uid).toMatch(/^\d+$/); // numeric, so Kubernetes runAsNonRoot can verify it
    expect(Number(uid)).toBeGreaterThan(0);
    expect(uid).toBe('10001');
    const lastRun = Math.max(...ops(runtime, 'RUN').map((i) => i.line));
    expect(user.line).toBeGreaterThan(lastRun);
  });

  it('exposes the client and admin ports and starts keymux with the mounted config', () => {
    const exposed = ops(runtime, 'EXPOSE')
      .flatMap((i) => i.args.split(/\s+/))
      .map((p) => p.replace(/\/tcp$/, ''));
    expect(exposed).toEqual(expect.arrayContaining(['6380', '9121']));
    expect(execForm(ops(runtime, 'ENTRYPOINT').pop())).toEqual(['node', 'bin/keymux.js']);
    expect(imageCmd()).toEqual(['--config', '/etc/keymux/keymux.yaml']);
  });

  it('needs at run time only packages listed in "dependencies" (the image has no dev dependencies)', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    const deps = new Set(Object.keys(pkg.dependencies));
    const missing = new Set<string>();
    const walk = (dir: string): void => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) {
          walk(p);
          continue;
        }
        if (!e.name.endsWith('.js')) continue;
        const text = fs.readFileSync(p, 'utf8');
        const specs = [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*)['"]([^'"]+)['"]/g)].map(
          (m) => m[1]!,
        );
        for (const s of specs) {
          if (s.startsWith('.') || s.startsWith('/') || s.startsWith('node:')) continue;
          const name = s.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]!;
          if (!deps.has(name) && !builtinModules.includes(name)) missing.add(`${name} (${path.relative(ROOT, p)})`);
        }
      }
    };
    walk(path.join(ROOT, 'dist'));
    expect([...missing]).toEqual([]);
  });

  it('Dockerfile.dockerignore keeps everything the Dockerfile copies, and leaves out node_modules, dist and .git', () => {
    const patterns = fs
      .readFileSync(path.join(DEPLOY, 'Dockerfile.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    const toRegex = (glob: string): RegExp =>
      new RegExp(
        `^${glob
          .replace(/\/+$/, '')
          .split('**')
          .map((part) =>
            part
              .replace(/[.+^${}()|[\]\\]/g, '\\$&')
              .replace(/\*/g, '[^/]*')
              .replace(/\?/g, '[^/]'),
          )
          .join('.*')}$`,
      );
    const rules = patterns.map((p) => ({
      include: p.startsWith('!'),
      re: toRegex(p.replace(/^!/, '').replace(/^\//, '')),
    }));
    // Docker: the last rule matching the path or one of its parent directories decides.
    const excluded = (file: string): boolean => {
      const prefixes = file.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
      let out = false;
      for (const r of rules) if (prefixes.some((p) => r.re.test(p))) out = !r.include;
      return out;
    };
    const sources = stages
      .flatMap((s) => s.instructions.filter((i) => i.op === 'COPY' && !/--from=/.test(i.args)))
      .flatMap((i) =>
        i.args
          .split(/\s+/)
          .filter((a) => !a.startsWith('--'))
          .slice(0, -1),
      );
    expect(sources.length).toBeGreaterThan(0);
    for (const src of sources) {
      expect(fs.existsSync(path.join(ROOT, src)), `${src} exists in the repository`).toBe(true);
      expect(excluded(src), `${src} is in the build context`).toBe(false);
      if (fs.statSync(path.join(ROOT, src)).isDirectory()) {
        for (const f of fs.readdirSync(path.join(ROOT, src), { recursive: true }) as string[]) {
          expect(excluded(`${src}/${f}`), `${src}/${f} is in the build context`).toBe(false);
        }
      }
    }
    for (const out of [
      'node_modules/yaml/package.json',
      'dist/main.js',
      '.git/HEAD',
      'test/unit/config.test.ts',
      'deploy/Dockerfile',
    ]) {
      expect(excluded(out), `${out} is left out of the build context`).toBe(true);
    }
  });
});

describe('deploy/kustomize manifests', () => {
  it('every manifest parses, and every object has apiVersion, kind and a name', () => {
    const files = listYaml(KUSTOMIZE);
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) {
      const docs = readDocs(file);
      expect(docs.length, `${rel(file)} has a document`).toBeGreaterThan(0);
      for (const doc of docs) {
        expect(isObj(doc), `${rel(file)}: a mapping`).toBe(true);
        const o = doc as Obj;
        expect(typeof o.apiVersion, `${rel(file)}: apiVersion`).toBe('string');
        expect(typeof o.kind, `${rel(file)}: kind`).toBe('string');
        if (o.kind !== 'Kustomization') expect(typeof o.metadata?.name, `${rel(file)}: metadata.name`).toBe('string');
      }
    }
  });

  it('every resource and patch a kustomization names exists', () => {
    const kfiles = listYaml(KUSTOMIZE).filter((f) => path.basename(f) === 'kustomization.yaml');
    expect(kfiles.map((f) => path.relative(KUSTOMIZE, path.dirname(f))).sort()).toEqual(['base', 'overlays/shared']);
    for (const kfile of kfiles) {
      const k = readDocs(kfile)[0] as Obj;
      const dir = path.dirname(kfile);
      for (const r of (k.resources ?? []) as string[]) {
        const p = path.resolve(dir, r);
        expect(fs.existsSync(p), `${rel(kfile)}: resource ${r}`).toBe(true);
        if (fs.statSync(p).isDirectory())
          expect(fs.existsSync(path.join(p, 'kustomization.yaml')), `${r}/kustomization.yaml`).toBe(true);
      }
      for (const p of (k.patches ?? []) as Obj[]) {
        if (p.path !== undefined)
          expect(fs.existsSync(path.resolve(dir, p.path)), `${rel(kfile)}: patch ${p.path}`).toBe(true);
      }
    }
  });

  it('`kubectl kustomize` renders each kustomization into the objects deploy/ promises', () => {
    const kinds = (dir: string): string[] =>
      render(dir)
        .map((o) => `${o.kind as string}/${o.metadata?.name as string}`)
        .sort();
    expect(kinds(BASE)).toEqual(['ConfigMap/keymux-config', 'Deployment/example-app']);
    expect(kinds(SHARED)).toEqual([
      'ConfigMap/keymux-config',
      'Deployment/keymux',
      'PodDisruptionBudget/keymux',
      'Service/keymux',
    ]);
  });
});

for (const [label, dir] of [
  ['base (sidecar)', BASE],
  ['overlays/shared', SHARED],
] as const) {
  describe(`deploy/kustomize/${label}`, () => {
    let r: Rendered;
    beforeAll(async () => {
      r = await inspect(dir);
    });

    it('embeds a keymux config that passes the real `keymux --check`', async () => {
      const tmp = makeTempDir('keymux-deploy-');
      try {
        const file = path.join(tmp, r.configKey);
        fs.writeFileSync(file, r.configText);
        const result = await run(process.execPath, [BIN, '--config', file, '--check'], { cwd: ROOT }).catch(
          (e: { code: number; stdout: string; stderr: string }) => e,
        );
        expect(result.stderr, 'keymux --check found problems').toBe('');
        expect(result.stdout).toContain('configuration is valid');
      } finally {
        removeTempDir(tmp);
      }
    });

    it('mounts the config as a directory (no subPath), read-only, from the ConfigMap the args name', () => {
      expect(r.keymux.volumeMounts.length).toBeGreaterThan(0);
      for (const m of r.keymux.volumeMounts as Obj[]) {
        expect(m.subPath, `volumeMount ${m.mountPath} has no subPath`).toBeUndefined();
        expect(m.subPathExpr, `volumeMount ${m.mountPath} has no subPathExpr`).toBeUndefined();
      }
      const mount = (r.keymux.volumeMounts as Obj[]).find((m) => configPathOf(r.keymux).startsWith(`${m.mountPath}/`))!;
      expect(mount.readOnly).toBe(true);
      expect(path.posix.dirname(configPathOf(r.keymux))).toBe(mount.mountPath);
      // The image's own CMD reads the same file, so the args can be dropped without breaking anything.
      expect(configPathOf({ ...r.keymux, args: undefined })).toBe(configPathOf(r.keymux));
    });

    it('probes /healthz (liveness, startup) and /readyz (readiness) on the admin address of the config', () => {
      const admin = r.config.admin;
      expect(admin, 'the embedded config has an admin address').not.toBeNull();
      // The kubelet connects to the pod IP: an admin server on loopback would fail every probe.
      expect(isLoopback(admin!.host), `admin ${admin!.host} is reachable from the pod IP`).toBe(false);
      const probes: Array<[string, string]> = [
        ['livenessProbe', '/healthz'],
        ['readinessProbe', '/readyz'],
      ];
      if (r.keymux.startupProbe) probes.push(['startupProbe', '/healthz']);
      for (const [probe, want] of probes) {
        const get = r.keymux[probe]?.httpGet as Obj | undefined;
        expect(get, `${probe} is an httpGet`).toBeDefined();
        expect(get!.path, `${probe} path`).toBe(want);
        expect(portNumber(r.keymux, get!.port), `${probe} port`).toBe(admin!.port);
        expect(get!.scheme ?? 'HTTP').toBe('HTTP');
      }
      const adminPort = (r.keymux.ports as Obj[]).find((p) => p.name === 'admin');
      expect(adminPort?.containerPort).toBe(admin!.port);
    });

    it('has Prometheus scrape annotations on the pod pointing at /metrics on the admin port', () => {
      const a = r.deployment.spec.template.metadata.annotations as Record<string, string>;
      expect(a['prometheus.io/scrape']).toBe('true');
      expect(a['prometheus.io/path']).toBe('/metrics');
      expect(a['prometheus.io/port']).toBe(String(r.config.admin!.port));
    });

    it('runs every container as non-root (uid 10001) with a read-only root filesystem and no privileges', () => {
      for (const c of [...(r.pod.initContainers ?? []), ...r.pod.containers] as Obj[]) {
        const sc = { ...r.pod.securityContext, ...c.securityContext } as Obj;
        expect(sc.runAsNonRoot, `${c.name}: runAsNonRoot`).toBe(true);
        expect(sc.runAsUser, `${c.name}: runAsUser`).toBe(10001);
        expect(c.securityContext?.readOnlyRootFilesystem, `${c.name}: readOnlyRootFilesystem`).toBe(true);
        expect(c.securityContext?.allowPrivilegeEscalation, `${c.name}: allowPrivilegeEscalation`).toBe(false);
        expect(c.securityContext?.capabilities?.drop, `${c.name}: capabilities`).toEqual(['ALL']);
        expect(c.securityContext?.privileged ?? false, `${c.name}: privileged`).toBe(false);
      }
      expect(r.pod.hostNetwork ?? false).toBe(false);
    });

    it('gives every container resource requests and a memory limit, and keymux a CPU limit', () => {
      for (const c of r.pod.containers as Obj[]) {
        expect(c.resources?.requests?.cpu, `${c.name}: cpu request`).toBeDefined();
        expect(c.resources?.requests?.memory, `${c.name}: memory request`).toBeDefined();
        expect(c.resources?.limits?.memory, `${c.name}: memory limit`).toBeDefined();
      }
      expect(r.keymux.resources.limits.cpu).toBeDefined();
    });

    it('lets keymux sleep in preStop and drain before the kubelet kills it', () => {
      const grace = Number(r.pod.terminationGracePeriodSeconds);
      const preStop = preStopSeconds(r.keymux);
      const drain = drainGraceSeconds(r.config);
      expect(preStop, 'keymux preStop sleeps so the endpoint removal propagates').toBeGreaterThanOrEqual(3);
      expect(drain).toBeGreaterThan(0);
      expect(
        grace,
        `terminationGracePeriodSeconds ${grace} > preStop ${preStop} s + drain grace ${drain} s`,
      ).toBeGreaterThan(preStop + drain);
      // Every other container must be gone before the kubelet's deadline as well.
      for (const c of r.pod.containers as Obj[]) expect(preStopSeconds(c)).toBeLessThan(grace);
    });

    /** The Secret volume mounted (without subPath) at the directory that holds `file`, or a failure message. */
    const secretHolding = (file: string): { secretName: string; mountPath: string } => {
      const mount = ((r.keymux.volumeMounts as Obj[] | undefined) ?? []).find((m) =>
        file.startsWith(`${String(m.mountPath).replace(/\/$/, '')}/`),
      );
      expect(mount, `a volumeMount of the keymux container holds ${file}`).toBeDefined();
      expect(mount!.subPath, `${file}: mounted without subPath (rotation must reach keymux)`).toBeUndefined();
      const volume = ((r.pod.volumes as Obj[] | undefined) ?? []).find((v) => v.name === mount!.name);
      expect(volume?.secret?.secretName, `${file} comes from a Secret, not a ConfigMap`).toBeDefined();
      return { secretName: String(volume!.secret.secretName), mountPath: String(mount!.mountPath) };
    };

    it('protects the admin port: a token from a Secret for all but the probes and /metrics, which shows no key names', () => {
      const admin = r.config.admin!;
      // The admin port is reachable from the pod network (probes, Prometheus): it must have a token.
      expect(admin.tokenFile, 'admin.token_file').toEqual(expect.any(String));
      secretHolding(admin.tokenFile!);
      // /metrics answers without the token: hot keys may only appear there as hashes.
      if (admin.publicMetrics !== false) expect(r.config.metrics.hotKeys.export).toBe('hash');
    });

    it('requires a client password from the same Secret (never inline in the ConfigMap)', () => {
      expect(r.config.clients.password, 'no clients.password in a ConfigMap').toBeNull();
      expect(r.config.clients.passwordFile, 'clients.password_file').toEqual(expect.any(String));
      const { secretName } = secretHolding(r.config.clients.passwordFile!);
      expect(secretHolding(r.config.admin!.tokenFile!).secretName).toBe(secretName);
      // The applications in the pod (the sidecar's app) get the same password from the same Secret key.
      for (const c of (r.pod.containers as Obj[]).filter((x) => x.name !== 'keymux')) {
        const env = ((c.env ?? []) as Obj[]).find((e) => e.name === 'REDIS_PASSWORD');
        expect(env?.valueFrom?.secretKeyRef, `${c.name}: REDIS_PASSWORD from the Secret`).toEqual({
          name: secretName,
          key: path.posix.basename(r.config.clients.passwordFile!),
        });
      }
    });

    it('ships no secret values: the Secret is made by the operator, as the README says', () => {
      expect(r.objects.filter((o) => o.kind === 'Secret')).toEqual([]);
      expect(JSON.stringify(r.objects)).not.toMatch(/password:\s*\S/);
      const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
      const secretName = secretHolding(r.config.clients.passwordFile!).secretName;
      expect(readme).toContain(`kubectl create secret generic ${secretName}`);
    });

    it('uses the kustomize image name "keymux" for the keymux container', () => {
      expect(String(r.keymux.image)).toMatch(/(^|\/)keymux:[\w.-]+$/);
    });
  });
}

describe('deploy/kustomize/base: keymux as a sidecar', () => {
  let r: Rendered;
  beforeAll(async () => {
    r = await inspect(BASE);
  });

  it('listens on 127.0.0.1:6380, where the application container points its Redis client', () => {
    expect(r.config.listen).toEqual({ host: '127.0.0.1', port: 6380 });
    expect((r.keymux.ports as Obj[]).find((p) => p.name === 'redis')?.containerPort).toBe(6380);
    const app = (r.pod.containers as Obj[]).filter((c) => c.name !== 'keymux');
    expect(app.length).toBeGreaterThan(0);
    const env = app.flatMap((c) => (c.env ?? []) as Obj[]).map((e) => String(e.value ?? ''));
    expect(env.some((v) => v.includes('127.0.0.1:6380'))).toBe(true);
  });

  it("keeps keymux up while the application shuts down (its preStop outlasts the app's)", () => {
    const app = (r.pod.containers as Obj[]).filter((c) => c.name !== 'keymux');
    for (const c of app) expect(preStopSeconds(r.keymux)).toBeGreaterThan(preStopSeconds(c));
  });

  it('uses shard host names and slots mode', () => {
    const doc = YAML.parse(r.configText) as Obj;
    expect(doc.mode).toBe('slots');
    for (const s of doc.shards as Obj[]) expect(s.address).toMatch(/^[a-z][\w.-]*:\d+$/);
  });
});

describe('deploy/kustomize/overlays/shared: keymux as a shared Service', () => {
  let r: Rendered;
  beforeAll(async () => {
    r = await inspect(SHARED);
  });

  it('is a Deployment of keymux alone, 2 replicas, listening on every interface', () => {
    expect(r.deployment.metadata.name).toBe('keymux');
    expect(r.deployment.spec.replicas).toBe(2);
    expect((r.pod.containers as Obj[]).map((c) => c.name)).toEqual(['keymux']);
    expect(r.config.listen.host).toBe('0.0.0.0');
    const labels = r.deployment.spec.template.metadata.labels as Obj;
    expect(r.deployment.spec.selector.matchLabels).toEqual(labels);
  });

  it('has a ClusterIP Service whose port matches the listen port and reaches the keymux pods', () => {
    const services = r.objects.filter((o) => o.kind === 'Service');
    expect(services).toHaveLength(1);
    const svc = services[0]!;
    expect(svc.spec.type ?? 'ClusterIP').toBe('ClusterIP');
    const labels = r.deployment.spec.template.metadata.labels as Obj;
    for (const [k, v] of Object.entries(svc.spec.selector as Obj)) expect(labels[k], `selector ${k}`).toBe(v);
    const ports = svc.spec.ports as Obj[];
    expect(ports).toHaveLength(1);
    expect(ports[0]!.port).toBe(6380);
    expect(ports[0]!.port).toBe(r.config.listen.port);
    expect(portNumber(r.keymux, ports[0]!.targetPort ?? ports[0]!.port)).toBe(r.config.listen.port);
  });

  it('has a PodDisruptionBudget for the keymux pods that still lets a node drain', () => {
    const pdbs = r.objects.filter((o) => o.kind === 'PodDisruptionBudget');
    expect(pdbs).toHaveLength(1);
    const pdb = pdbs[0]!;
    expect(pdb.apiVersion).toBe('policy/v1');
    const labels = r.deployment.spec.template.metadata.labels as Obj;
    for (const [k, v] of Object.entries(pdb.spec.selector.matchLabels as Obj))
      expect(labels[k], `selector ${k}`).toBe(v);
    if (pdb.spec.minAvailable !== undefined) expect(pdb.spec.minAvailable).toBeLessThan(r.deployment.spec.replicas);
    else expect(pdb.spec.maxUnavailable).toBeGreaterThan(0);
  });

  it('leaves no trace of the example application', () => {
    const text = JSON.stringify(r.objects);
    expect(text).not.toContain('example-app');
  });
});
