// Sends events to a running `tally serve` with Segment's own Node.js library,
// @segment/analytics-node (the same messages as send.py).
//
// Usage: node send.mjs WRITE_KEY HOST
// Exits non-zero if the library reports any error.
import { Analytics } from '@segment/analytics-node'

const [writeKey, host] = process.argv.slice(2)
const analytics = new Analytics({ writeKey, host, path: '/v1/batch', maxEventsInBatch: 15, flushInterval: 200 })
const errors = []
analytics.on('error', (e) => errors.push(String(e && (e.reason || e.message || e.code) || e)))

for (let i = 0; i < 30; i++) {
  analytics.track({
    userId: `user${i % 7}`,
    event: 'Order Completed',
    properties: { revenue: i, url: 'https://shop.example/checkout' },
  })
}
analytics.identify({ userId: 'user1', traits: { email: 'one@example.com', plan: 'pro' } })
analytics.page({ userId: 'user2', category: 'Docs', name: 'Pricing', properties: { url: 'https://example.com/pricing' } })
analytics.screen({ userId: 'user3', name: 'Home' })
analytics.group({ userId: 'user1', groupId: 'acme-inc', traits: { name: 'Acme' } })
analytics.alias({ userId: 'user4', previousId: 'anon-42' })
await analytics.closeAndFlush({ timeout: 10000 })

if (errors.length) {
  console.error(errors.join('\n'))
  process.exit(1)
}
console.log('sent 35 messages')
