package execute

import (
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/prego/testreset/controller/progress"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

type fakeBackupStream struct {
	grpc.ClientStream
	msgs []*agentv1.BackupSiteResponse
}

func (f *fakeBackupStream) Recv() (*agentv1.BackupSiteResponse, error) {
	if len(f.msgs) == 0 {
		return nil, io.EOF
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}

type fakeRestoreStream struct {
	grpc.ClientStream
	sent int
}

func (f *fakeRestoreStream) Send(r *agentv1.RestoreSiteRequest) error {
	f.sent += len(r.GetChunk().GetData())
	return nil
}

func (f *fakeRestoreStream) CloseAndRecv() (*agentv1.RestoreSiteResponse, error) {
	return &agentv1.RestoreSiteResponse{}, nil
}

func chunk(n int) []byte { return make([]byte, n) }

// TestMeterStreams checks that the stream wrappers count exactly the chunk data, for sizes
// around a chunk, and report the final count.
func TestMeterStreams(t *testing.T) {
	for _, size := range []int{0, 1, 64<<10 - 1, 64 << 10, 64<<10 + 1, 3 * 64 << 10} {
		var msgs []*agentv1.BackupSiteResponse
		var reqs []*agentv1.RestoreSiteRequest
		for _, art := range []string{"db.sql.gz", "files.tar.gz"} {
			msgs = append(msgs, &agentv1.BackupSiteResponse{Msg: &agentv1.BackupSiteResponse_Header{Header: &agentv1.ArtifactHeader{FileName: art}}})
			reqs = append(reqs, &agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Header{Header: &agentv1.ArtifactHeader{FileName: art}}})
			for left := size; left > 0; left -= 64 << 10 {
				c := &agentv1.Chunk{Data: chunk(min(left, 64<<10))}
				msgs = append(msgs, &agentv1.BackupSiteResponse{Msg: &agentv1.BackupSiteResponse_Chunk{Chunk: c}})
				reqs = append(reqs, &agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Chunk{Chunk: c}})
			}
			tr := &agentv1.ArtifactTrailer{Bytes: int64(size)}
			msgs = append(msgs, &agentv1.BackupSiteResponse{Msg: &agentv1.BackupSiteResponse_Trailer{Trailer: tr}})
			reqs = append(reqs, &agentv1.RestoreSiteRequest{Msg: &agentv1.RestoreSiteRequest_Trailer{Trailer: tr}})
		}
		clock := func() time.Time { return time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC) }
		last := func(r *progress.Recorder) int64 {
			ev := r.Events()
			if len(ev) == 0 {
				return 0
			}
			return ev[len(ev)-1].Bytes
		}

		rec := &progress.Recorder{}
		s := meterBackup(&fakeBackupStream{msgs: msgs}, progress.NewMeter(rec, progress.Event{Step: "backup site"}, clock))
		for {
			if _, err := s.Recv(); err != nil {
				break
			}
		}
		if got, want := last(rec), int64(2*size); got != want {
			t.Errorf("backup of 2 x %d bytes: last reported %d, want %d", size, got, want)
		}

		rec = &progress.Recorder{}
		fr := &fakeRestoreStream{}
		rs := meterRestore(fr, progress.NewMeter(rec, progress.Event{Step: "restore site"}, clock))
		for _, r := range reqs {
			if err := rs.Send(r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := rs.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
		if got, want := last(rec), int64(fr.sent); got != want || fr.sent != 2*size {
			t.Errorf("restore of 2 x %d bytes: last reported %d, sent %d", size, got, fr.sent)
		}
	}
}
