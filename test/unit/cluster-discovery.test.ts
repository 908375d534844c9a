/**
 * src/backend/cluster-discovery.ts: CLUSTER SHARDS and CLUSTER SLOTS replies -> ClusterView. The fixtures below
 * are real replies, decoded by redis-parser exactly as control.ts decodes them, recorded from a Redis 7.0.15
 * cluster started by test/support/cluster.ts (3 masters + 3 replicas, then resharding, add-node, hostnames,
 * endpoint types, rebalance and a kill -9 failover). Node ids and ports are those of that run:
 *
 *   A  a6fd287f  :21928  master of 0-5460 (then 100-5460); killed in the failover
 *   A' b842bef9  :20353  A's replica; promoted by the failover
 *   B  b05e6562  :13813  master of 5461-10922 (then also 0-99), replica B' 5bf45a9d :13224
 *   C  07ee6df5  :21410  master of 10923-16383, replica C' 49df49ba :18945
 *   D  fc65b36d  :13657  added empty with add-node, filled by rebalance; no replica
 *
 * LOADING_SHARDS is from another run (ids differ): right after `redis-cli --cluster create`, Redis 7.0 reports
 * replicas whose replication offset is still 0 as health "loading".
 */
import { describe, it, expect } from 'vitest';
import {
  parseClusterShards,
  parseClusterSlots,
  masterForSlot,
  viewNodes,
  ClusterDiscoveryError,
  UNASSIGNED,
  SLOT_COUNT,
  type ClusterView,
} from '../../src/backend/cluster-discovery.js';

// ---------------------------------------------------------------------------------------------------------------
// Recorded replies
/** Another run, seconds after create: replicas at offset 0 are "loading". */
const LOADING_SHARDS = [
  [
    'slots',
    [0, 5460],
    'nodes',
    [
      [
        'id',
        '7084c4b948ff492b0ec962da3e924206dc1cc3e2',
        'port',
        19314,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        0,
        'health',
        'online',
      ],
      [
        'id',
        '95a40cc5adc3b9c93f73113e7710d370b5af2966',
        'port',
        21635,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        0,
        'health',
        'loading',
      ],
    ],
  ],
  [
    'slots',
    [5461, 10922],
    'nodes',
    [
      [
        'id',
        '3c094395fed80ddb5234912d51cfb091f10fbe2f',
        'port',
        21679,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        0,
        'health',
        'online',
      ],
      [
        'id',
        '8050ba6e83ce6367ff56a511bd42aaed3659e16b',
        'port',
        22086,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        0,
        'health',
        'loading',
      ],
    ],
  ],
  [
    'slots',
    [10923, 16383],
    'nodes',
    [
      [
        'id',
        'a2aa5aa13e866e8d1951968fee894c99b0b2baea',
        'port',
        16915,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        0,
        'health',
        'online',
      ],
      [
        'id',
        '4a19fc3b8ddeda412b339397d6a5651542df6e82',
        'port',
        19693,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        0,
        'health',
        'loading',
      ],
    ],
  ],
];

/** Fresh cluster, cluster-preferred-endpoint-type ip (the default). */
const FRESH_SHARDS = [
  [
    'slots',
    [10923, 16383],
    'nodes',
    [
      [
        'id',
        '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e',
        'port',
        21410,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        14,
        'health',
        'online',
      ],
      [
        'id',
        '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050',
        'port',
        18945,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        14,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [5461, 10922],
    'nodes',
    [
      [
        'id',
        'b05e65625f2918ebf40418bc169b59ae9ce3cc49',
        'port',
        13813,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        14,
        'health',
        'online',
      ],
      [
        'id',
        '5bf45a9d30fbd03dfb47626a11166932bca5b2c5',
        'port',
        13224,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        14,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [0, 5460],
    'nodes',
    [
      [
        'id',
        'a6fd287f67541c1e060787994475781579408004',
        'port',
        21928,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        14,
        'health',
        'online',
      ],
      [
        'id',
        'b842bef97a4a2073cb8d725cb05071bf90595add',
        'port',
        20353,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        14,
        'health',
        'online',
      ],
    ],
  ],
];

/** The same cluster, CLUSTER SLOTS. */
const FRESH_SLOTS = [
  [
    0,
    5460,
    ['127.0.0.1', 21928, 'a6fd287f67541c1e060787994475781579408004', []],
    ['127.0.0.1', 20353, 'b842bef97a4a2073cb8d725cb05071bf90595add', []],
  ],
  [
    5461,
    10922,
    ['127.0.0.1', 13813, 'b05e65625f2918ebf40418bc169b59ae9ce3cc49', []],
    ['127.0.0.1', 13224, '5bf45a9d30fbd03dfb47626a11166932bca5b2c5', []],
  ],
  [
    10923,
    16383,
    ['127.0.0.1', 21410, '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e', []],
    ['127.0.0.1', 18945, '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050', []],
  ],
];

/** After `--cluster reshard` of 100 slots from A to B and `--cluster add-node` of D (empty). */
const RESHARD_SHARDS = [
  [
    'slots',
    [10923, 16383],
    'nodes',
    [
      [
        'id',
        '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e',
        'port',
        21410,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        42,
        'health',
        'online',
      ],
      [
        'id',
        '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050',
        'port',
        18945,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        42,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [],
    'nodes',
    [
      [
        'id',
        'fc65b36d59b4e886e0dd218528c99192aa1d1d4b',
        'port',
        13657,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        0,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [0, 99, 5461, 10922],
    'nodes',
    [
      [
        'id',
        'b05e65625f2918ebf40418bc169b59ae9ce3cc49',
        'port',
        13813,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        42,
        'health',
        'online',
      ],
      [
        'id',
        '5bf45a9d30fbd03dfb47626a11166932bca5b2c5',
        'port',
        13224,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        42,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [100, 5460],
    'nodes',
    [
      [
        'id',
        'a6fd287f67541c1e060787994475781579408004',
        'port',
        21928,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        42,
        'health',
        'online',
      ],
      [
        'id',
        'b842bef97a4a2073cb8d725cb05071bf90595add',
        'port',
        20353,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        42,
        'health',
        'online',
      ],
    ],
  ],
];

/** The same, CLUSTER SLOTS (D has no slots, so it is not listed). */
const RESHARD_SLOTS = [
  [
    0,
    99,
    ['127.0.0.1', 13813, 'b05e65625f2918ebf40418bc169b59ae9ce3cc49', []],
    ['127.0.0.1', 13224, '5bf45a9d30fbd03dfb47626a11166932bca5b2c5', []],
  ],
  [
    100,
    5460,
    ['127.0.0.1', 21928, 'a6fd287f67541c1e060787994475781579408004', []],
    ['127.0.0.1', 20353, 'b842bef97a4a2073cb8d725cb05071bf90595add', []],
  ],
  [
    5461,
    10922,
    ['127.0.0.1', 13813, 'b05e65625f2918ebf40418bc169b59ae9ce3cc49', []],
    ['127.0.0.1', 13224, '5bf45a9d30fbd03dfb47626a11166932bca5b2c5', []],
  ],
  [
    10923,
    16383,
    ['127.0.0.1', 21410, '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e', []],
    ['127.0.0.1', 18945, '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050', []],
  ],
];

/** Every node with cluster-announce-hostname node-<port>.example; endpoint type still ip. */
const HOST_IP_SHARDS = [
  [
    'slots',
    [10923, 16383],
    'nodes',
    [
      [
        'id',
        '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e',
        'port',
        21410,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'hostname',
        'node-21410.example',
        'role',
        'master',
        'replication-offset',
        56,
        'health',
        'online',
      ],
      [
        'id',
        '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050',
        'port',
        18945,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'hostname',
        'node-18945.example',
        'role',
        'replica',
        'replication-offset',
        56,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [],
    'nodes',
    [
      [
        'id',
        'fc65b36d59b4e886e0dd218528c99192aa1d1d4b',
        'port',
        13657,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'hostname',
        'node-13657.example',
        'role',
        'master',
        'replication-offset',
        0,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [0, 99, 5461, 10922],
    'nodes',
    [
      [
        'id',
        'b05e65625f2918ebf40418bc169b59ae9ce3cc49',
        'port',
        13813,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'hostname',
        'node-13813.example',
        'role',
        'master',
        'replication-offset',
        56,
        'health',
        'online',
      ],
      [
        'id',
        '5bf45a9d30fbd03dfb47626a11166932bca5b2c5',
        'port',
        13224,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'hostname',
        'node-13224.example',
        'role',
        'replica',
        'replication-offset',
        56,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [100, 5460],
    'nodes',
    [
      [
        'id',
        'a6fd287f67541c1e060787994475781579408004',
        'port',
        21928,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'hostname',
        'node-21928.example',
        'role',
        'master',
        'replication-offset',
        70,
        'health',
        'online',
      ],
      [
        'id',
        'b842bef97a4a2073cb8d725cb05071bf90595add',
        'port',
        20353,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'hostname',
        'node-20353.example',
        'role',
        'replica',
        'replication-offset',
        56,
        'health',
        'online',
      ],
    ],
  ],
];

/** cluster-preferred-endpoint-type hostname on the node asked. */
const HOSTNAME_SHARDS = [
  [
    'slots',
    [10923, 16383],
    'nodes',
    [
      [
        'id',
        '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e',
        'port',
        21410,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-21410.example',
        'hostname',
        'node-21410.example',
        'role',
        'master',
        'replication-offset',
        56,
        'health',
        'online',
      ],
      [
        'id',
        '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050',
        'port',
        18945,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-18945.example',
        'hostname',
        'node-18945.example',
        'role',
        'replica',
        'replication-offset',
        56,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [],
    'nodes',
    [
      [
        'id',
        'fc65b36d59b4e886e0dd218528c99192aa1d1d4b',
        'port',
        13657,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-13657.example',
        'hostname',
        'node-13657.example',
        'role',
        'master',
        'replication-offset',
        0,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [0, 99, 5461, 10922],
    'nodes',
    [
      [
        'id',
        'b05e65625f2918ebf40418bc169b59ae9ce3cc49',
        'port',
        13813,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-13813.example',
        'hostname',
        'node-13813.example',
        'role',
        'master',
        'replication-offset',
        56,
        'health',
        'online',
      ],
      [
        'id',
        '5bf45a9d30fbd03dfb47626a11166932bca5b2c5',
        'port',
        13224,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-13224.example',
        'hostname',
        'node-13224.example',
        'role',
        'replica',
        'replication-offset',
        56,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [100, 5460],
    'nodes',
    [
      [
        'id',
        'a6fd287f67541c1e060787994475781579408004',
        'port',
        21928,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-21928.example',
        'hostname',
        'node-21928.example',
        'role',
        'master',
        'replication-offset',
        70,
        'health',
        'online',
      ],
      [
        'id',
        'b842bef97a4a2073cb8d725cb05071bf90595add',
        'port',
        20353,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-20353.example',
        'hostname',
        'node-20353.example',
        'role',
        'replica',
        'replication-offset',
        56,
        'health',
        'online',
      ],
    ],
  ],
];

/** The same, CLUSTER SLOTS: hostname first, ip in the metadata. */
const HOSTNAME_SLOTS = [
  [
    0,
    99,
    ['node-13813.example', 13813, 'b05e65625f2918ebf40418bc169b59ae9ce3cc49', ['ip', '127.0.0.1']],
    ['node-13224.example', 13224, '5bf45a9d30fbd03dfb47626a11166932bca5b2c5', ['ip', '127.0.0.1']],
  ],
  [
    100,
    5460,
    ['node-21928.example', 21928, 'a6fd287f67541c1e060787994475781579408004', ['ip', '127.0.0.1']],
    ['node-20353.example', 20353, 'b842bef97a4a2073cb8d725cb05071bf90595add', ['ip', '127.0.0.1']],
  ],
  [
    5461,
    10922,
    ['node-13813.example', 13813, 'b05e65625f2918ebf40418bc169b59ae9ce3cc49', ['ip', '127.0.0.1']],
    ['node-13224.example', 13224, '5bf45a9d30fbd03dfb47626a11166932bca5b2c5', ['ip', '127.0.0.1']],
  ],
  [
    10923,
    16383,
    ['node-21410.example', 21410, '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e', ['ip', '127.0.0.1']],
    ['node-18945.example', 18945, '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050', ['ip', '127.0.0.1']],
  ],
];

/** Endpoint type hostname, D's hostname removed: its endpoint is "?". */
const HOSTNAME_MISSING_SHARDS = [
  [
    'slots',
    [10923, 16383],
    'nodes',
    [
      [
        'id',
        '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e',
        'port',
        21410,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-21410.example',
        'hostname',
        'node-21410.example',
        'role',
        'master',
        'replication-offset',
        84,
        'health',
        'online',
      ],
      [
        'id',
        '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050',
        'port',
        18945,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-18945.example',
        'hostname',
        'node-18945.example',
        'role',
        'replica',
        'replication-offset',
        84,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [],
    'nodes',
    [
      [
        'id',
        'fc65b36d59b4e886e0dd218528c99192aa1d1d4b',
        'port',
        13657,
        'ip',
        '127.0.0.1',
        'endpoint',
        '?',
        'role',
        'master',
        'replication-offset',
        0,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [0, 99, 5461, 10922],
    'nodes',
    [
      [
        'id',
        'b05e65625f2918ebf40418bc169b59ae9ce3cc49',
        'port',
        13813,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-13813.example',
        'hostname',
        'node-13813.example',
        'role',
        'master',
        'replication-offset',
        84,
        'health',
        'online',
      ],
      [
        'id',
        '5bf45a9d30fbd03dfb47626a11166932bca5b2c5',
        'port',
        13224,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-13224.example',
        'hostname',
        'node-13224.example',
        'role',
        'replica',
        'replication-offset',
        84,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [100, 5460],
    'nodes',
    [
      [
        'id',
        'a6fd287f67541c1e060787994475781579408004',
        'port',
        21928,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-21928.example',
        'hostname',
        'node-21928.example',
        'role',
        'master',
        'replication-offset',
        84,
        'health',
        'online',
      ],
      [
        'id',
        'b842bef97a4a2073cb8d725cb05071bf90595add',
        'port',
        20353,
        'ip',
        '127.0.0.1',
        'endpoint',
        'node-20353.example',
        'hostname',
        'node-20353.example',
        'role',
        'replica',
        'replication-offset',
        84,
        'health',
        'online',
      ],
    ],
  ],
];

/** cluster-preferred-endpoint-type unknown-endpoint: endpoint "". */
const UNKNOWN_SHARDS = [
  [
    'slots',
    [10923, 16383],
    'nodes',
    [
      [
        'id',
        '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e',
        'port',
        21410,
        'ip',
        '127.0.0.1',
        'endpoint',
        '',
        'hostname',
        'node-21410.example',
        'role',
        'master',
        'replication-offset',
        84,
        'health',
        'online',
      ],
      [
        'id',
        '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050',
        'port',
        18945,
        'ip',
        '127.0.0.1',
        'endpoint',
        '',
        'hostname',
        'node-18945.example',
        'role',
        'replica',
        'replication-offset',
        84,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [],
    'nodes',
    [
      [
        'id',
        'fc65b36d59b4e886e0dd218528c99192aa1d1d4b',
        'port',
        13657,
        'ip',
        '127.0.0.1',
        'endpoint',
        '',
        'role',
        'master',
        'replication-offset',
        0,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [0, 99, 5461, 10922],
    'nodes',
    [
      [
        'id',
        'b05e65625f2918ebf40418bc169b59ae9ce3cc49',
        'port',
        13813,
        'ip',
        '127.0.0.1',
        'endpoint',
        '',
        'hostname',
        'node-13813.example',
        'role',
        'master',
        'replication-offset',
        84,
        'health',
        'online',
      ],
      [
        'id',
        '5bf45a9d30fbd03dfb47626a11166932bca5b2c5',
        'port',
        13224,
        'ip',
        '127.0.0.1',
        'endpoint',
        '',
        'hostname',
        'node-13224.example',
        'role',
        'replica',
        'replication-offset',
        84,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [100, 5460],
    'nodes',
    [
      [
        'id',
        'a6fd287f67541c1e060787994475781579408004',
        'port',
        21928,
        'ip',
        '127.0.0.1',
        'endpoint',
        '',
        'hostname',
        'node-21928.example',
        'role',
        'master',
        'replication-offset',
        84,
        'health',
        'online',
      ],
      [
        'id',
        'b842bef97a4a2073cb8d725cb05071bf90595add',
        'port',
        20353,
        'ip',
        '127.0.0.1',
        'endpoint',
        '',
        'hostname',
        'node-20353.example',
        'role',
        'replica',
        'replication-offset',
        84,
        'health',
        'online',
      ],
    ],
  ],
];

/** The same, CLUSTER SLOTS: null hosts. */
const UNKNOWN_SLOTS = [
  [
    0,
    99,
    [null, 13813, 'b05e65625f2918ebf40418bc169b59ae9ce3cc49', ['ip', '127.0.0.1', 'hostname', 'node-13813.example']],
    [null, 13224, '5bf45a9d30fbd03dfb47626a11166932bca5b2c5', ['ip', '127.0.0.1', 'hostname', 'node-13224.example']],
  ],
  [
    100,
    5460,
    [null, 21928, 'a6fd287f67541c1e060787994475781579408004', ['ip', '127.0.0.1', 'hostname', 'node-21928.example']],
    [null, 20353, 'b842bef97a4a2073cb8d725cb05071bf90595add', ['ip', '127.0.0.1', 'hostname', 'node-20353.example']],
  ],
  [
    5461,
    10922,
    [null, 13813, 'b05e65625f2918ebf40418bc169b59ae9ce3cc49', ['ip', '127.0.0.1', 'hostname', 'node-13813.example']],
    [null, 13224, '5bf45a9d30fbd03dfb47626a11166932bca5b2c5', ['ip', '127.0.0.1', 'hostname', 'node-13224.example']],
  ],
  [
    10923,
    16383,
    [null, 21410, '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e', ['ip', '127.0.0.1', 'hostname', 'node-21410.example']],
    [null, 18945, '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050', ['ip', '127.0.0.1', 'hostname', 'node-18945.example']],
  ],
];

/** After rebalance (D filled), kill -9 of A and the promotion of A': A is listed with health "fail". */
const FAILOVER_SHARDS = [
  [
    'slots',
    [6827, 10922],
    'nodes',
    [
      [
        'id',
        'b05e65625f2918ebf40418bc169b59ae9ce3cc49',
        'port',
        13813,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        168,
        'health',
        'online',
      ],
      [
        'id',
        '5bf45a9d30fbd03dfb47626a11166932bca5b2c5',
        'port',
        13224,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        154,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [1365, 5460],
    'nodes',
    [
      [
        'id',
        'b842bef97a4a2073cb8d725cb05071bf90595add',
        'port',
        20353,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        126,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [12288, 16383],
    'nodes',
    [
      [
        'id',
        '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e',
        'port',
        21410,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        154,
        'health',
        'online',
      ],
      [
        'id',
        '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050',
        'port',
        18945,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'replica',
        'replication-offset',
        168,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [0, 1364, 5461, 6826, 10923, 12287],
    'nodes',
    [
      [
        'id',
        'fc65b36d59b4e886e0dd218528c99192aa1d1d4b',
        'port',
        13657,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        0,
        'health',
        'online',
      ],
    ],
  ],
  [
    'slots',
    [],
    'nodes',
    [
      [
        'id',
        'a6fd287f67541c1e060787994475781579408004',
        'port',
        21928,
        'ip',
        '127.0.0.1',
        'endpoint',
        '127.0.0.1',
        'role',
        'master',
        'replication-offset',
        126,
        'health',
        'fail',
      ],
    ],
  ],
];

/** The same, CLUSTER SLOTS. */
const FAILOVER_SLOTS = [
  [0, 1364, ['127.0.0.1', 13657, 'fc65b36d59b4e886e0dd218528c99192aa1d1d4b', []]],
  [1365, 5460, ['127.0.0.1', 20353, 'b842bef97a4a2073cb8d725cb05071bf90595add', []]],
  [5461, 6826, ['127.0.0.1', 13657, 'fc65b36d59b4e886e0dd218528c99192aa1d1d4b', []]],
  [
    6827,
    10922,
    ['127.0.0.1', 13813, 'b05e65625f2918ebf40418bc169b59ae9ce3cc49', []],
    ['127.0.0.1', 13224, '5bf45a9d30fbd03dfb47626a11166932bca5b2c5', []],
  ],
  [10923, 12287, ['127.0.0.1', 13657, 'fc65b36d59b4e886e0dd218528c99192aa1d1d4b', []]],
  [
    12288,
    16383,
    ['127.0.0.1', 21410, '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e', []],
    ['127.0.0.1', 18945, '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050', []],
  ],
];

// ---------------------------------------------------------------------------------------------------------------

const SEED = { host: '127.0.0.1', port: 21928 };
const ID = {
  A: 'a6fd287f67541c1e060787994475781579408004',
  A2: 'b842bef97a4a2073cb8d725cb05071bf90595add',
  B: 'b05e65625f2918ebf40418bc169b59ae9ce3cc49',
  B2: '5bf45a9d30fbd03dfb47626a11166932bca5b2c5',
  C: '07ee6df5903adecd6e19d1b519c51f4cd5f04b1e',
  C2: '49df49ba6f6e3ecb5eac8efb7711351b0e4ce050',
  D: 'fc65b36d59b4e886e0dd218528c99192aa1d1d4b',
};

/** A compact picture of a view: per master "port [ranges] replicas-ports". */
function layout(v: ClusterView): string[] {
  return v.masters.map(
    (m, i) =>
      `${m.address} ${v.slotRanges[i]!.map(([a, z]) => `${a}-${z}`).join(',')} ` +
      `[${v.replicasOf[i]!.map((r) => r.address).join(',')}]`,
  );
}

/** Checks that slotOwner agrees with slotRanges and counts assigned slots. */
function checkOwnerTable(v: ClusterView): void {
  const expected = new Uint16Array(SLOT_COUNT).fill(UNASSIGNED);
  v.slotRanges.forEach((ranges, i) => {
    for (const [a, z] of ranges) expected.fill(i, a, z + 1);
  });
  expect(Buffer.from(v.slotOwner.buffer).equals(Buffer.from(expected.buffer))).toBe(true);
  expect(v.assignedSlots).toBe(expected.filter((o) => o !== UNASSIGNED).length);
}

const clone = <T>(v: T): T => structuredClone(v);

describe('CLUSTER SHARDS', () => {
  it('reads a fresh 3 + 3 cluster: masters by lowest slot, their replicas, every slot owned', () => {
    const v = parseClusterShards(FRESH_SHARDS, SEED);
    expect(layout(v)).toEqual([
      '127.0.0.1:21928 0-5460 [127.0.0.1:20353]',
      '127.0.0.1:13813 5461-10922 [127.0.0.1:13224]',
      '127.0.0.1:21410 10923-16383 [127.0.0.1:18945]',
    ]);
    expect(v.masters[0]).toEqual({
      id: ID.A,
      host: '127.0.0.1',
      port: 21928,
      address: '127.0.0.1:21928',
      role: 'master',
      health: 'online',
    });
    expect(v.replicasOf[0]![0]).toEqual({
      id: ID.A2,
      host: '127.0.0.1',
      port: 20353,
      address: '127.0.0.1:20353',
      role: 'replica',
      health: 'online',
    });
    expect(v.assignedSlots).toBe(16384);
    expect([
      v.slotOwner[0],
      v.slotOwner[5460],
      v.slotOwner[5461],
      v.slotOwner[10922],
      v.slotOwner[10923],
      v.slotOwner[16383],
    ]).toEqual([0, 0, 1, 1, 2, 2]);
    expect(v.slotOwner).toBeInstanceOf(Uint16Array);
    expect(v.slotOwner.length).toBe(16384);
    expect(v.skipped).toEqual([]);
    expect(v.via).toBe('shards');
    expect(v.seed).toBe('127.0.0.1:21928');
    expect(v.signature).toMatch(/^[0-9a-f]{40}$/);
    checkOwnerTable(v);
  });

  it('returns a frozen view', () => {
    const v = parseClusterShards(FRESH_SHARDS, SEED);
    for (const o of [
      v,
      v.masters,
      v.masters[0],
      v.replicasOf,
      v.replicasOf[0],
      v.replicasOf[0]![0],
      v.slotRanges,
      v.slotRanges[0],
      v.slotRanges[0]![0],
      v.skipped,
    ]) {
      expect(Object.isFrozen(o)).toBe(true);
    }
  });

  it('leaves out replicas reported as "loading" (offset 0 right after create)', () => {
    const v = parseClusterShards(LOADING_SHARDS, SEED);
    expect(v.masters.map((m) => m.port)).toEqual([19314, 21679, 16915]);
    expect(v.replicasOf).toEqual([[], [], []]);
    expect(v.skipped.map((n) => [n.port, n.role, n.health])).toEqual([
      [21635, 'replica', 'loading'],
      [22086, 'replica', 'loading'],
      [19693, 'replica', 'loading'],
    ]);
    expect(v.assignedSlots).toBe(16384);
  });

  it('reads several ranges per master and a master without slots (listed last)', () => {
    const v = parseClusterShards(RESHARD_SHARDS, SEED);
    expect(layout(v)).toEqual([
      '127.0.0.1:13813 0-99,5461-10922 [127.0.0.1:13224]',
      '127.0.0.1:21928 100-5460 [127.0.0.1:20353]',
      '127.0.0.1:21410 10923-16383 [127.0.0.1:18945]',
      '127.0.0.1:13657  []',
    ]);
    expect(masterForSlot(v, 99)!.id).toBe(ID.B);
    expect(masterForSlot(v, 100)!.id).toBe(ID.A);
    expect(v.assignedSlots).toBe(16384);
    checkOwnerTable(v);
  });

  it('skips a failed master; its promoted replica owns the slots', () => {
    const v = parseClusterShards(FAILOVER_SHARDS, SEED);
    expect(layout(v)).toEqual([
      '127.0.0.1:13657 0-1364,5461-6826,10923-12287 []',
      '127.0.0.1:20353 1365-5460 []',
      '127.0.0.1:13813 6827-10922 [127.0.0.1:13224]',
      '127.0.0.1:21410 12288-16383 [127.0.0.1:18945]',
    ]);
    expect(v.masters[1]!.id).toBe(ID.A2);
    expect(v.skipped).toEqual([
      {
        id: ID.A,
        host: '127.0.0.1',
        port: 21928,
        address: '127.0.0.1:21928',
        role: 'master',
        health: 'fail',
      },
    ]);
    expect(v.assignedSlots).toBe(16384);
    checkOwnerTable(v);
  });

  it('during a failover window (master failed, replica not promoted yet) leaves its slots unassigned', () => {
    // Derived from FRESH_SHARDS: A marked failed as other nodes report it before A' wins the election.
    const reply = clone(FRESH_SHARDS);
    const nodes = reply[2]![3] as unknown[][];
    expect(nodes[0]![1]).toBe(ID.A);
    nodes[0]![13] = 'fail';
    const v = parseClusterShards(reply, SEED);
    expect(layout(v)).toEqual([
      '127.0.0.1:13813 5461-10922 [127.0.0.1:13224]',
      '127.0.0.1:21410 10923-16383 [127.0.0.1:18945]',
    ]);
    expect(v.assignedSlots).toBe(16384 - 5461);
    expect(v.slotOwner[0]).toBe(UNASSIGNED);
    expect(masterForSlot(v, 0)).toBeNull();
    expect(v.skipped.map((n) => [n.id, n.health])).toEqual([
      [ID.A, 'fail'],
      [ID.A2, 'online'],
    ]);
    // "failed", as documented for later versions, is treated the same.
    nodes[0]![13] = 'failed';
    expect(parseClusterShards(reply, SEED).assignedSlots).toBe(16384 - 5461);
  });

  describe('endpoints', () => {
    it('uses the endpoint (ip) even when a hostname is announced', () => {
      const v = parseClusterShards(HOST_IP_SHARDS, SEED);
      expect(viewNodes(v).map((n) => n.host)).toEqual(Array(7).fill('127.0.0.1'));
    });

    it('uses the hostname when it is the preferred endpoint', () => {
      const v = parseClusterShards(HOSTNAME_SHARDS, SEED);
      expect(layout(v)).toEqual([
        'node-13813.example:13813 0-99,5461-10922 [node-13224.example:13224]',
        'node-21928.example:21928 100-5460 [node-20353.example:20353]',
        'node-21410.example:21410 10923-16383 [node-18945.example:18945]',
        'node-13657.example:13657  []',
      ]);
      expect(v.masters[0]).toMatchObject({ host: 'node-13813.example', port: 13813 });
    });

    it('falls back to the ip when the endpoint is "?" (hostname preferred, none set)', () => {
      const v = parseClusterShards(HOSTNAME_MISSING_SHARDS, SEED);
      expect(v.masters[3]).toMatchObject({ id: ID.D, host: '127.0.0.1', address: '127.0.0.1:13657' });
      expect(v.masters[0]!.host).toBe('node-13813.example');
    });

    it('uses the seed\'s host when the endpoint is unknown ("")', () => {
      const v = parseClusterShards(UNKNOWN_SHARDS, { host: '10.9.8.7', port: 21928 });
      expect(
        viewNodes(v)
          .map((n) => n.address)
          .sort(),
      ).toEqual([13224, 13657, 13813, 18945, 20353, 21410, 21928].map((p) => `10.9.8.7:${p}`));
      const v6 = parseClusterShards(UNKNOWN_SHARDS, { host: '::1', port: 21928 });
      expect(v6.masters[0]).toMatchObject({ host: '::1', address: '[::1]:13813' });
      expect(v6.seed).toBe('[::1]:21928');
    });
  });

  it('accepts RESP3-style maps and slot numbers as strings', () => {
    const asMaps = (FRESH_SHARDS as unknown[][]).map((shard) => {
      const m = new Map<string, unknown>();
      for (let i = 0; i < shard.length; i += 2) m.set(shard[i] as string, shard[i + 1]);
      m.set('slots', (m.get('slots') as number[]).map(String));
      m.set(
        'nodes',
        (m.get('nodes') as unknown[][]).map((n) =>
          Object.fromEntries(Array.from({ length: n.length / 2 }, (_, i) => [n[2 * i], n[2 * i + 1]])),
        ),
      );
      return m;
    });
    const v = parseClusterShards(asMaps, SEED);
    expect(layout(v)).toEqual(layout(parseClusterShards(FRESH_SHARDS, SEED)));
  });

  it('reaches nodes on their tls-port with backend TLS on, and says to turn it on for TLS-only nodes', () => {
    // Redis with tls-cluster reports `tls-port`, and `port` only when it also has a plain port (port 0: none).
    const withTls = (keepPlain: boolean): unknown[][] => {
      const r = clone(FRESH_SHARDS);
      for (const shard of r) {
        for (const n of shard[3] as unknown[][]) {
          const i = n.indexOf('port');
          const port = n[i + 1] as number;
          n.push('tls-port', port + 1);
          if (!keepPlain) n.splice(i, 2);
        }
      }
      return r;
    };
    const plainPorts = layout(parseClusterShards(FRESH_SHARDS, SEED));
    const bump = (l: string[]): string[] => l.map((x) => x.replace(/:(\d+)/g, (_, p: string) => `:${Number(p) + 1}`));
    // Both ports reported: TLS takes the tls-port, plain text the port.
    expect(layout(parseClusterShards(withTls(true), SEED, { tls: true }))).toEqual(bump(plainPorts));
    expect(layout(parseClusterShards(withTls(true), SEED))).toEqual(plainPorts);
    // TLS only.
    expect(layout(parseClusterShards(withTls(false), SEED, { tls: true }))).toEqual(bump(plainPorts));
    expect(() => parseClusterShards(withTls(false), SEED)).toThrow(
      'CLUSTER SHARDS: shard 0 node 0: the node listens for TLS only (tls-port 21411): set backend.tls.enabled to reach it',
    );
    // TLS on, but the node reports only a plain port (no tls-cluster): that port is used (and a TLS handshake
    // with it will fail loudly, never fall back to plain text).
    expect(layout(parseClusterShards(FRESH_SHARDS, SEED, { tls: true }))).toEqual(plainPorts);
  });

  it('rejects malformed replies with the place and the problem', () => {
    const bad = (mutate: (r: unknown[][]) => unknown, base: unknown[][] = FRESH_SHARDS): string => {
      const r = clone(base);
      const replaced = mutate(r);
      try {
        parseClusterShards(replaced === undefined ? r : replaced, SEED);
      } catch (err) {
        return (err as Error).message;
      }
      return 'no error';
    };
    const node = (r: unknown[][], s: number, n: number): unknown[] => (r[s]![3] as unknown[][])[n]!;
    expect(bad(() => 'OK')).toBe('CLUSTER SHARDS: expected an array of shards, got "OK"');
    expect(bad(() => new Error('ERR nope'))).toBe(
      'CLUSTER SHARDS: expected an array of shards, got the error "ERR nope"',
    );
    expect(
      bad((r) => {
        r[0] = 'x' as never;
      }),
    ).toBe('CLUSTER SHARDS: shard 0: expected key/value pairs, got "x"');
    expect(
      bad((r) => {
        r[0]!.pop();
      }),
    ).toBe('CLUSTER SHARDS: shard 0: expected key/value pairs, got 3 elements');
    expect(
      bad((r) => {
        r[0]![3] = null;
      }),
    ).toBe('CLUSTER SHARDS: shard 0: expected "nodes" to be an array, got null');
    expect(
      bad((r) => {
        r[0]![1] = 5;
      }),
    ).toBe('CLUSTER SHARDS: shard 0: expected "slots" to be an array, got number 5');
    expect(
      bad((r) => {
        r[0]![1] = [1, 2, 3];
      }),
    ).toBe('CLUSTER SHARDS: shard 0: "slots" has an odd number of bounds (3)');
    expect(
      bad((r) => {
        r[0]![1] = [10923, 16384];
      }),
    ).toBe('CLUSTER SHARDS: shard 0 slots[1]: expected a slot 0..16383, got number 16384');
    expect(
      bad((r) => {
        r[0]![1] = [-1, 5];
      }),
    ).toBe('CLUSTER SHARDS: shard 0 slots[0]: expected a slot 0..16383, got number -1');
    expect(
      bad((r) => {
        r[0]![1] = ['1e3', 5];
      }),
    ).toBe('CLUSTER SHARDS: shard 0 slots[0]: expected a slot 0..16383, got "1e3"');
    expect(
      bad((r) => {
        r[0]![1] = [20, 10];
      }),
    ).toBe('CLUSTER SHARDS: shard 0: range 20-10 is reversed');
    expect(
      bad((r) => {
        r[0]![1] = [0, 10];
      }),
    ).toBe('CLUSTER SHARDS: shard 2: slot 0 claimed by both 127.0.0.1:21410 and 127.0.0.1:21928');
    expect(
      bad((r) => {
        node(r, 0, 0)[3] = 0;
      }),
    ).toBe('CLUSTER SHARDS: shard 0 node 0: expected a port 1..65535, got number 0');
    expect(
      bad((r) => {
        node(r, 0, 0)[3] = 65536;
      }),
    ).toBe('CLUSTER SHARDS: shard 0 node 0: expected a port 1..65535, got number 65536');
    expect(
      bad((r) => {
        node(r, 0, 0).splice(2, 2);
      }),
    ).toBe('CLUSTER SHARDS: shard 0 node 0: expected a port 1..65535, got nothing');
    expect(
      bad((r) => {
        node(r, 0, 0)[1] = '';
      }),
    ).toBe('CLUSTER SHARDS: shard 0 node 0: expected a non-empty "id", got ""');
    expect(
      bad((r) => {
        node(r, 0, 1)[9] = 'slave';
      }),
    ).toBe('CLUSTER SHARDS: shard 0 node 1: unknown role "slave"');
    expect(
      bad((r) => {
        node(r, 0, 1)[9] = 'master';
      }),
    ).toBe('CLUSTER SHARDS: shard 0: 2 healthy masters (127.0.0.1:21410, 127.0.0.1:18945)');
    expect(
      bad((r) => {
        node(r, 0, 0)[7] = 'bad host';
      }),
    ).toBe('CLUSTER SHARDS: shard 0 node 0: "bad host" is not a valid host name or IP address');
    expect(
      bad((r) => {
        node(r, 0, 0)[7] = '-x';
      }),
    ).toBe('CLUSTER SHARDS: shard 0 node 0: "-x" is not a valid host name or IP address');
    expect(
      bad((r) => {
        node(r, 0, 0)[1] = ID.B;
      }),
    ).toBe('CLUSTER SHARDS: shard 1: master b05e65625f2918ebf40418bc169b59ae9ce3cc49 listed at two addresses');
    expect(
      bad((r) => {
        node(r, 0, 1)[3] = 13813;
      }),
    ).toBe(`CLUSTER SHARDS: shard 1: nodes ${ID.C2} and ${ID.B} share the address 127.0.0.1:13813`);
  });
});

describe('CLUSTER SLOTS', () => {
  it('reads the same layout as CLUSTER SHARDS, without health, with the same signature', () => {
    const slots = parseClusterSlots(FRESH_SLOTS, SEED);
    const shards = parseClusterShards(FRESH_SHARDS, SEED);
    expect(layout(slots)).toEqual(layout(shards));
    expect(slots.masters.map((m) => m.id)).toEqual([ID.A, ID.B, ID.C]);
    expect(viewNodes(slots).every((n) => n.health === null)).toBe(true);
    expect(slots.via).toBe('slots');
    expect(slots.signature).toBe(shards.signature);
    checkOwnerTable(slots);
  });

  it("merges a master's several ranges and lists its replicas once", () => {
    const v = parseClusterSlots(RESHARD_SLOTS, SEED);
    expect(layout(v)).toEqual([
      '127.0.0.1:13813 0-99,5461-10922 [127.0.0.1:13224]',
      '127.0.0.1:21928 100-5460 [127.0.0.1:20353]',
      '127.0.0.1:21410 10923-16383 [127.0.0.1:18945]',
    ]);
    // The empty master D is not in SLOTS; the slot table is the same as from SHARDS.
    expect(
      Buffer.from(v.slotOwner.buffer).equals(Buffer.from(parseClusterShards(RESHARD_SHARDS, SEED).slotOwner.buffer)),
    ).toBe(true);
  });

  it('reads the layout after a failover', () => {
    const v = parseClusterSlots(FAILOVER_SLOTS, SEED);
    expect(layout(v)).toEqual(layout(parseClusterShards(FAILOVER_SHARDS, SEED)));
    expect(v.skipped).toEqual([]);
  });

  it('uses hostnames, the metadata ip for "?", and the seed host for null', () => {
    expect(parseClusterSlots(HOSTNAME_SLOTS, SEED).masters.map((m) => m.address)).toEqual([
      'node-13813.example:13813',
      'node-21928.example:21928',
      'node-21410.example:21410',
    ]);
    const unknown = parseClusterSlots(UNKNOWN_SLOTS, { host: 'seed.example', port: 1 });
    expect(viewNodes(unknown).map((n) => n.host)).toEqual(Array(6).fill('seed.example'));
    const question = clone(HOSTNAME_SLOTS);
    (question[1]![2] as unknown[])[0] = '?';
    expect(parseClusterSlots(question, SEED).masters.map((m) => m.address)).toEqual([
      'node-13813.example:13813',
      '127.0.0.1:21928',
      'node-21410.example:21410',
    ]);
    // A master whose address differs between its ranges is a contradiction, not a guess.
    (question[0]![2] as unknown[])[0] = '?';
    expect(() => parseClusterSlots(question, SEED)).toThrow(
      `CLUSTER SLOTS: entry 2: master ${ID.B} listed at two addresses`,
    );
  });

  it('accepts old replies without ids or metadata (the address names the node)', () => {
    const v = parseClusterSlots([[0, 16383, ['10.0.0.1', 7000], ['10.0.0.2', 7000]]], SEED);
    expect(v.masters).toEqual([
      { id: '10.0.0.1:7000', host: '10.0.0.1', port: 7000, address: '10.0.0.1:7000', role: 'master', health: null },
    ]);
    expect(v.replicasOf[0]!.map((r) => r.id)).toEqual(['10.0.0.2:7000']);
  });

  it('rejects malformed replies', () => {
    const bad = (reply: unknown): string => {
      try {
        parseClusterSlots(reply, SEED);
      } catch (err) {
        return (err as Error).message;
      }
      return 'no error';
    };
    expect(bad(null)).toBe('CLUSTER SLOTS: expected an array of slot ranges, got null');
    expect(bad([[0, 16383]])).toBe(
      'CLUSTER SLOTS: entry 0: expected [start, end, master, ...replicas], got an array of 2',
    );
    expect(bad([[0, 16384, ['h', 1, 'x']]])).toBe(
      'CLUSTER SLOTS: entry 0 end: expected a slot 0..16383, got number 16384',
    );
    expect(bad([[5, 1, ['h', 1, 'x']]])).toBe('CLUSTER SLOTS: entry 0: range 5-1 is reversed');
    expect(bad([[0, 1, ['h']]])).toBe('CLUSTER SLOTS: entry 0 master: expected [host, port, id], got an array of 1');
    expect(bad([[0, 1, [7, 1, 'x']]])).toBe('CLUSTER SLOTS: entry 0 master: expected a host, got number 7');
    expect(bad([[0, 1, ['h', '0', 'x']]])).toBe('CLUSTER SLOTS: entry 0 master: expected a port 1..65535, got "0"');
    expect(bad([[0, 1, ['h', 1, 5]]])).toBe('CLUSTER SLOTS: entry 0 master: expected a node id, got number 5');
    expect(bad([[0, 1, ['h', 1, 'x'], ['h\n', 2, 'y']]])).toBe(
      'CLUSTER SLOTS: entry 0 replica 0: "h\\n" is not a valid host name or IP address',
    );
    expect(
      bad([
        [0, 10, ['h', 1, 'x']],
        [5, 20, ['h', 2, 'y']],
      ]),
    ).toBe('CLUSTER SLOTS: entry 1: slot 5 claimed by both h:1 and h:2');
  });
});

describe('signature and helpers', () => {
  it('is the same for the same layout in any order, and changes with slots, nodes and replicas', () => {
    const base = parseClusterShards(FRESH_SHARDS, SEED);
    const shuffled = clone(FRESH_SHARDS).reverse();
    for (const shard of shuffled) (shard[3] as unknown[]).reverse();
    expect(parseClusterShards(shuffled, { host: '10.0.0.1', port: 1 }).signature).toBe(base.signature);
    expect(parseClusterShards(RESHARD_SHARDS, SEED).signature).not.toBe(base.signature);
    expect(parseClusterShards(FAILOVER_SHARDS, SEED).signature).not.toBe(base.signature);
    expect(parseClusterShards(LOADING_SHARDS, SEED).signature).not.toBe(
      parseClusterShards(FRESH_SHARDS, SEED).signature,
    );
    const moved = clone(FRESH_SHARDS);
    (moved[0]![3] as unknown[][])[1]![3] = 18946; // C's replica on another port
    expect(parseClusterShards(moved, SEED).signature).not.toBe(base.signature);
    expect(parseClusterShards(HOSTNAME_SHARDS, SEED).signature).not.toBe(
      parseClusterShards(HOST_IP_SHARDS, SEED).signature,
    );
  });

  it('masterForSlot and viewNodes', () => {
    const v = parseClusterShards(FRESH_SHARDS, SEED);
    expect(masterForSlot(v, 0)!.port).toBe(21928);
    expect(masterForSlot(v, 16383)!.port).toBe(21410);
    expect(masterForSlot(v, 16384)).toBeNull();
    expect(viewNodes(v).map((n) => `${n.role} ${n.port}`)).toEqual([
      'master 21928',
      'master 13813',
      'master 21410',
      'replica 20353',
      'replica 13224',
      'replica 18945',
    ]);
  });

  it('ClusterDiscoveryError lists every seed', () => {
    const e = new ClusterDiscoveryError([
      { seed: '127.0.0.1:1', error: 'connect ECONNREFUSED 127.0.0.1:1' },
      { seed: 'h:2', error: 'CLUSTER SHARDS: ERR This instance has cluster support disabled' },
    ]);
    expect(e.code).toBe('ERR_KEYMUX_CLUSTER_DISCOVERY');
    expect(e.message).toBe(
      'cluster discovery: no seed gave a usable slot map: 127.0.0.1:1 (connect ECONNREFUSED 127.0.0.1:1); ' +
        'h:2 (CLUSTER SHARDS: ERR This instance has cluster support disabled)',
    );
    expect(new ClusterDiscoveryError([]).message).toBe('cluster discovery: no seeds given');
    expect(Object.isFrozen(e.failures)).toBe(true);
  });
});
