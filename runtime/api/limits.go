package api

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/nodepki/nodepki/api/node"
)

// Request size bounds. A whole machine config (inline manifests included) or its patches are the
// largest requests; every other request is a few hundred bytes, so it gets a much smaller bound.
const (
	// maxRequestBytes bounds any request message on the public and the internal server.
	maxRequestBytes = 4 << 20
	// maxHeaderBytes bounds the metadata of a call.
	maxHeaderBytes = 64 << 10
	// maxSmallRequestBytes bounds the requests of every method but ApplyConfiguration.
	maxSmallRequestBytes = 64 << 10
	// maxPatches bounds the patches of one ApplyConfiguration.
	maxPatches = 64
)

// largeRequests are the methods that may take up to maxRequestBytes.
var largeRequests = map[string]bool{
	node.NodeService_ApplyConfiguration_FullMethodName: true,
}

// unaryRequestSize refuses a request above its method's bound, unknown fields included.
func unaryRequestSize(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	msg, ok := req.(proto.Message)
	if !ok {
		return handler(ctx, req)
	}

	if size := proto.Size(msg); !largeRequests[info.FullMethod] && size > maxSmallRequestBytes {
		return nil, status.Errorf(codes.ResourceExhausted, "request of %d bytes is larger than the %d bytes %s accepts", size, maxSmallRequestBytes, info.FullMethod)
	}

	if apply, ok := req.(*node.ApplyConfigurationRequest); ok && len(apply.GetPatches()) > maxPatches {
		return nil, status.Errorf(codes.InvalidArgument, "%d patches, at most %d are accepted in one call: merge them or apply them in steps", len(apply.GetPatches()), maxPatches)
	}

	return handler(ctx, req)
}
