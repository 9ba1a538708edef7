package source

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// xdsServiceConfig makes the channel use pick_first over every address
// the resolver gives (with a dns:/// target of a headless Service, every
// operator replica), shuffled so that sidecars spread over the replicas
// instead of all taking the first. When the connection a stream is on
// fails, pick_first goes idle and the next stream connects again through
// the list: a replica that refuses is skipped at once, one that does not
// answer after 250 ms (grpc-go's happy eyeballs), and the DNS resolver is
// asked again.
const xdsServiceConfig = `{"loadBalancingConfig": [{"pick_first": {"shuffleAddressList": true}}]}`

// Keepalive of the connection to the operator: a replica that vanished
// without closing the connection (a node lost, a network partition) is
// noticed within XDSKeepaliveTime + xdsKeepaliveTimeout, and the stream
// fails over. The operator's server refuses pings more frequent than its
// enforcement policy's MinTime (operator/xds.KeepaliveMinTime): this must
// not be shorter (sidecar/app's xDS integration test checks it).
const (
	XDSKeepaliveTime    = 20 * time.Second
	xdsKeepaliveTimeout = 10 * time.Second
)

// xdsMaxResponseBytes bounds one response from the operator. The first
// response of a type holds every resource of the namespace, about 250
// bytes per API key: 25 MB at 100,000 keys, where grpc-go's default of
// 4 MiB stopped at about 17,000. The bound allows about a million keys.
const xdsMaxResponseBytes = 256 << 20

// dialOptions are the options of the channel to the operator.
func (x *XDS) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(x.TLS)),
		grpc.WithDefaultServiceConfig(xdsServiceConfig),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: XDSKeepaliveTime, Timeout: xdsKeepaliveTimeout}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(xdsMaxResponseBytes)),
	}
}
