package main

// The hello service of examples/proto/hello.proto, written by hand over protobuf-go's wire
// package: the two messages have only string fields, so a few lines replace protoc-gen-go and
// protoc-gen-go-grpc (which would mean more packages to fetch and generated code to keep).

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
)

// helloRequest is hello.HelloRequest.
type helloRequest struct {
	Name string // field 1
}

// helloReply is hello.HelloReply.
type helloReply struct {
	Message string // field 1
	Node    string // field 2
	Address string // field 3
}

// wireCodec encodes the two hello messages in the protobuf wire format. Its name is "proto",
// so the content type on the wire is the standard application/grpc+proto.
type wireCodec struct{}

func (wireCodec) Name() string { return "proto" }

func appendString(b []byte, field protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func (wireCodec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *helloRequest:
		return appendString(nil, 1, m.Name), nil
	case *helloReply:
		b := appendString(nil, 1, m.Message)
		b = appendString(b, 2, m.Node)
		return appendString(b, 3, m.Address), nil
	}
	return nil, fmt.Errorf("wireCodec: cannot marshal %T", v)
}

// stringFields reads every field of b, keeping the string (length-delimited) ones by number.
func stringFields(b []byte) (map[protowire.Number]string, error) {
	fields := map[protowire.Number]string{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType {
			s, m := protowire.ConsumeString(b)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			fields[num] = s
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		b = b[m:]
	}
	return fields, nil
}

func (wireCodec) Unmarshal(data []byte, v any) error {
	fields, err := stringFields(data)
	if err != nil {
		return err
	}
	switch m := v.(type) {
	case *helloRequest:
		m.Name = fields[1]
		return nil
	case *helloReply:
		m.Message, m.Node, m.Address = fields[1], fields[2], fields[3]
		return nil
	}
	return errors.New("wireCodec: unknown message type")
}

// sayHello calls hello.Greeter/SayHello on conn.
func sayHello(ctx context.Context, conn *grpc.ClientConn, name string) (*helloReply, error) {
	reply := new(helloReply)
	err := conn.Invoke(ctx, "/hello.Greeter/SayHello", &helloRequest{Name: name}, reply,
		grpc.ForceCodec(wireCodec{}))
	return reply, err
}

// greeter is the server side of hello.Greeter.
type greeter interface {
	SayHello(context.Context, *helloRequest) (*helloReply, error)
}

// goNode answers like the Rust hello node: a greeting, its id and its address.
type goNode struct {
	id, address string
}

func (n goNode) SayHello(_ context.Context, req *helloRequest) (*helloReply, error) {
	name := req.Name
	if name == "" {
		name = "world"
	}
	return &helloReply{Message: "Hello, " + name + "!", Node: n.id, Address: n.address}, nil
}

var greeterDesc = grpc.ServiceDesc{
	ServiceName: "hello.Greeter",
	HandlerType: (*greeter)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "SayHello",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			req := new(helloRequest)
			if err := dec(req); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(greeter).SayHello(ctx, req)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/hello.Greeter/SayHello"}
			return interceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
				return srv.(greeter).SayHello(ctx, req.(*helloRequest))
			})
		},
	}},
	Metadata: "hello.proto",
}

// newHelloServer is a gRPC server serving node as hello.Greeter.
func newHelloServer(node goNode) *grpc.Server {
	server := grpc.NewServer(grpc.ForceServerCodec(wireCodec{}))
	server.RegisterService(&greeterDesc, node)
	return server
}
