package execute

import (
	"github.com/prego/testreset/controller/progress"
	agentv1 "github.com/prego/testreset/proto/agent/v1"
)

// meterBackup counts the artifact bytes of a BackupSite stream as the controller receives
// them (chunk data: the sizes the manifest records), reporting them through m. Nothing is
// buffered: each message is counted and handed on.
func meterBackup(s agentv1.Agent_BackupSiteClient, m *progress.Meter) agentv1.Agent_BackupSiteClient {
	return &meteredBackup{Agent_BackupSiteClient: s, m: m}
}

type meteredBackup struct {
	agentv1.Agent_BackupSiteClient
	m *progress.Meter
}

func (s *meteredBackup) Recv() (*agentv1.BackupSiteResponse, error) {
	r, err := s.Agent_BackupSiteClient.Recv()
	if n := len(r.GetChunk().GetData()); n > 0 {
		s.m.Add(n)
	}
	if err != nil || r.GetTrailer() != nil {
		s.m.Flush()
	}
	return r, err
}

// meterRestore counts the artifact bytes sent on a RestoreSite stream, reporting them
// through m.
func meterRestore(s agentv1.Agent_RestoreSiteClient, m *progress.Meter) agentv1.Agent_RestoreSiteClient {
	return &meteredRestore{Agent_RestoreSiteClient: s, m: m}
}

type meteredRestore struct {
	agentv1.Agent_RestoreSiteClient
	m *progress.Meter
}

func (s *meteredRestore) Send(r *agentv1.RestoreSiteRequest) error {
	err := s.Agent_RestoreSiteClient.Send(r)
	if n := len(r.GetChunk().GetData()); n > 0 && err == nil {
		s.m.Add(n)
	}
	if err != nil || r.GetTrailer() != nil {
		s.m.Flush()
	}
	return err
}

func (s *meteredRestore) CloseAndRecv() (*agentv1.RestoreSiteResponse, error) {
	s.m.Flush()
	return s.Agent_RestoreSiteClient.CloseAndRecv()
}
