/**
 * The keymux configuration: its types (camelCase, resolved, defaults applied), and the validator that turns a
 * parsed YAML document into a KeymuxConfig or a list of errors naming file, line and what is wrong.
 * A KeymuxConfig is immutable once built; a reload builds a new one.
 */

export type Mode = 'slots' | 'ring';

export type HashName =
  | 'one_at_a_time' | 'md5' | 'crc16' | 'crc32' | 'crc32a' | 'fnv1_64' | 'fnv1a_64'
  | 'fnv1_32' | 'fnv1a_32' | 'hsieh' | 'murmur' | 'jenkins';

export interface HostPort { host: string; port: number }

export interface ShardConfig {
  /** The shard's name: as given, or "host:port" when the YAML gives none. */
  name: string;
  /** True when the YAML gave a name (ketama then hashes the name, as twemproxy does). */
  named: boolean;
  /** "host:port" exactly as written (normalised: no spaces). */
  address: string;
  host: string;
  port: number;
  /** slots mode: inclusive [from, to] ranges, sorted; ring mode: null. */
  slots: Array<[number, number]> | null;
  /** ring mode: weight (default 1); slots mode: 1. */
  weight: number;
}

export interface UserConfig { name: string; password: string }

export interface KeymuxConfig {
  /** Path of the file it was loaded from (or '<inline>'). */
  source: string;
  listen: HostPort;
  admin: HostPort | null;
  mode: Mode;
  /** Two characters, e.g. "{}", or null for no hash tag. Default "{}". */
  hashTag: string | null;
  shards: ShardConfig[];
  ring: { hash: HashName; distribution: 'ketama' };
  backend: {
    connections: number;          // default 1, 1..64
    connectTimeoutMs: number;     // default 1000
    timeoutMs: number;            // default 2000 (0 = none)
    password: string | null;
    username: string | null;
  };
  clients: {
    max: number;                  // default 10000
    idleTimeoutS: number;         // default 0 (never)
    password: string | null;
    users: UserConfig[];
    /** Requests in flight per client before keymux stops reading it (backpressure). default 1024 */
    maxInflight: number;
  };
  limits: {
    maxBulkBytes: number;         // default 536870912
    maxArgs: number;              // default 1048576
    maxInlineBytes: number;       // default 65536
  };
  log: { level: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent' };
  commands: { deny: string[] };   // lowercase command names
}
