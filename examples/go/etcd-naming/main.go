// etcd-naming is a Go program that uses etcd's Go naming packages the standard way
// (go.etcd.io/etcd/client/v3/naming/endpoints and .../naming/resolver), to show that the Rust
// services and gateway interoperate with Go services and clients through etcd.
//
//	etcd-naming [--etcd 127.0.0.1:2379] list <target>
//	etcd-naming [--etcd ...] watch <target> [--for 10s]
//	etcd-naming [--etcd ...] call <target> [--policy pick_first|round_robin] [--n 100] [--interval 50ms] [--timeout 2s] [--authority host]
//	etcd-naming [--etcd ...] register <target> [--listen 127.0.0.1:0] [--id go-node] [--ttl 5] [--metadata JSON]
//
// Every line it prints on stdout is one event, words separated by spaces, so a test can read it:
//
//	endpoint <key> <addr> <metadata as JSON>          (list)
//	ready | add <key> <addr> <metadata> | delete <key> (watch)
//	call <seq> <unix ms> ok <node> <address>          (call)
//	call <seq> <unix ms> err <code> <message>         (call)
//	summary ok=<n> err=<n>                            (call, at the end)
//	listening on <addr> | registered <key> at <addr>  (register)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.etcd.io/etcd/client/v3/naming/resolver"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func main() {
	global := flag.NewFlagSet("etcd-naming", flag.ExitOnError)
	etcd := global.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	global.Parse(os.Args[1:])
	args := global.Args()
	if len(args) < 2 {
		fail("usage: etcd-naming [--etcd endpoints] list|watch|call|register <target> [options]")
	}
	command, target, rest := args[0], args[1], args[2:]

	client, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*etcd, ","),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		fail("etcd client: %v", err)
	}
	defer client.Close()

	switch command {
	case "list":
		list(client, target)
	case "watch":
		watch(client, target, rest)
	case "call":
		call(client, target, rest)
	case "register":
		register(client, target, rest)
	default:
		fail("unknown command %q", command)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "etcd-naming: "+format+"\n", args...)
	os.Exit(1)
}

func manager(client *clientv3.Client, target string) endpoints.Manager {
	m, err := endpoints.NewManager(client, target)
	if err != nil {
		fail("endpoints manager: %v", err)
	}
	return m
}

func metadataJSON(m any) string {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Sprintf("%q", fmt.Sprint(m))
	}
	return string(b)
}

// list prints what endpoints.Manager.List sees, sorted by key.
func list(client *clientv3.Client, target string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	eps, err := manager(client, target).List(ctx)
	if err != nil {
		fail("list: %v", err)
	}
	keys := make([]string, 0, len(eps))
	for k := range eps {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("endpoint %s %s %s\n", k, eps[k].Addr, metadataJSON(eps[k].Metadata))
	}
}

// watch prints what endpoints.Manager's watch channel delivers, for a while.
func watch(client *clientv3.Client, target string, args []string) {
	fs := flag.NewFlagSet("watch", flag.ExitOnError)
	duration := fs.Duration("for", 10*time.Second, "how long to watch")
	fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	ch, err := manager(client, target).NewWatchChannel(ctx)
	if err != nil {
		fail("watch: %v", err)
	}
	fmt.Println("ready")
	for ups := range ch {
		for _, up := range ups {
			switch up.Op {
			case endpoints.Add:
				fmt.Printf("add %s %s %s\n", up.Key, up.Endpoint.Addr, metadataJSON(up.Endpoint.Metadata))
			case endpoints.Delete:
				fmt.Printf("delete %s\n", up.Key)
			}
		}
	}
}

// call makes calls through etcd:///<target>, the way Go services are told to discover each
// other, and prints where each went. pick_first is grpc-go's default, so with that policy no
// service config is given at all.
func call(client *clientv3.Client, target string, args []string) {
	fs := flag.NewFlagSet("call", flag.ExitOnError)
	policy := fs.String("policy", "pick_first", "pick_first (grpc-go's default) or round_robin")
	n := fs.Int("n", 100, "how many calls")
	interval := fs.Duration("interval", 50*time.Millisecond, "pause between calls")
	timeout := fs.Duration("timeout", 2*time.Second, "deadline of each call")
	authority := fs.String("authority", "", "the :authority to send (grpc-go sends the target's path by default)")
	fs.Parse(args)

	builder, err := resolver.NewBuilder(client)
	if err != nil {
		fail("resolver: %v", err)
	}
	options := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(builder),
	}
	switch *policy {
	case "pick_first":
	case "round_robin":
		options = append(options,
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	default:
		fail("unknown policy %q", *policy)
	}
	if *authority != "" {
		options = append(options, grpc.WithAuthority(*authority))
	}
	conn, err := grpc.NewClient("etcd:///"+target, options...)
	if err != nil {
		fail("dial: %v", err)
	}
	defer conn.Close()

	ok, failed := 0, 0
	for i := 0; i < *n; i++ {
		if i > 0 {
			time.Sleep(*interval)
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		reply, err := sayHello(ctx, conn, "go")
		cancel()
		now := time.Now().UnixMilli()
		if err != nil {
			failed++
			s := status.Convert(err)
			msg := strings.Join(strings.Fields(s.Message()), " ")
			fmt.Printf("call %d %d err %s %s\n", i, now, s.Code(), msg)
			continue
		}
		ok++
		fmt.Printf("call %d %d ok %s %s\n", i, now, reply.Node, reply.Address)
	}
	fmt.Printf("summary ok=%d err=%d\n", ok, failed)
}

// register serves the hello service from Go and registers it the standard Go way:
// endpoints.Manager.AddEndpoint under a lease kept alive, until SIGTERM or SIGINT.
func register(client *clientv3.Client, target string, args []string) {
	fs := flag.NewFlagSet("register", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "where to serve the hello service")
	id := fs.String("id", "go-node", "the node id the replies carry")
	ttl := fs.Int64("ttl", 5, "lease TTL in seconds")
	metadata := fs.String("metadata", "", "the endpoint's Metadata as JSON (none when empty)")
	fs.Parse(args)

	var meta any
	if *metadata != "" {
		if err := json.Unmarshal([]byte(*metadata), &meta); err != nil {
			fail("--metadata: %v", err)
		}
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fail("listen: %v", err)
	}
	addr := lis.Addr().String()
	server := newHelloServer(goNode{id: *id, address: addr})
	go server.Serve(lis)
	fmt.Printf("listening on %s\n", addr)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lease, err := client.Grant(ctx, *ttl)
	if err != nil {
		fail("lease: %v", err)
	}
	key := target + "/" + addr
	err = manager(client, target).AddEndpoint(ctx, key,
		endpoints.Endpoint{Addr: addr, Metadata: meta}, clientv3.WithLease(lease.ID))
	if err != nil {
		fail("add endpoint: %v", err)
	}
	alive, err := client.KeepAlive(ctx, lease.ID)
	if err != nil {
		fail("keepalive: %v", err)
	}
	go func() {
		for range alive {
		}
	}()
	fmt.Printf("registered %s at %s\n", key, addr)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	manager(client, target).DeleteEndpoint(context.Background(), key)
	client.Revoke(context.Background(), lease.ID)
	server.GracefulStop()
	fmt.Printf("deregistered %s\n", key)
}
