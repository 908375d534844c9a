let t0 = performance.now();
await import('zod');
const a = performance.now() - t0;
t0 = performance.now();
await import('/work/wt/zod/dist/config/schema.js');
console.log('zod', a.toFixed(0), 'schema', (performance.now() - t0).toFixed(0));
