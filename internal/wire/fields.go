package wire

import "google.golang.org/protobuf/encoding/protowire"

// Field numbers of kvtier.v1 messages that the hand-written encoders and
// decoders in daemon and client read or write. They live here, once, and
// TestFieldNumbers checks each against the generated descriptors, so a
// renumbered field cannot go unnoticed.
const (
	PutRequestHeader protowire.Number = 1 // PutRequest.header (PutHeader)
	PutRequestData   protowire.Number = 2 // PutRequest.data (bytes)

	GetResponseLayout     protowire.Number = 1 // GetResponse.layout (Layout)
	GetResponseFrom       protowire.Number = 2 // GetResponse.from (Tier)
	GetResponseTotalBytes protowire.Number = 3 // GetResponse.total_bytes (uint64)
	GetResponseData       protowire.Number = 4 // GetResponse.data (bytes)

	LookupRequestPackedHashes protowire.Number = 4 // LookupRequest.packed_hashes (bytes)

	LookupResponseCachedBlocks protowire.Number = 1 // LookupResponse.cached_blocks (uint32)
	LookupResponseTotalBlocks  protowire.Number = 2 // LookupResponse.total_blocks (uint32)
	LookupResponseTiers        protowire.Number = 3 // LookupResponse.tiers (repeated Tier, packed)
)
