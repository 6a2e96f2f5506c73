package store_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/caseroom/caseroom/internal/testdb"
	"github.com/caseroom/caseroom/store"
)

func TestRoles(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		added, err := st.Roles.AddClinician(ctx, "@doc:hs", "Practitioner/1", "@admin:hs")
		if err != nil || !added {
			t.Fatalf("add clinician = %v, %v", added, err)
		}
		if added, _ = st.Roles.AddClinician(ctx, "@doc:hs", "Practitioner/2", "@admin:hs"); added {
			t.Fatal("second add reported as new")
		}
		list, err := st.Roles.Clinicians(ctx)
		if err != nil || len(list) != 1 || list[0].PractitionerRef != "Practitioner/2" || list[0].AddedBy != "@admin:hs" {
			t.Fatalf("clinicians = %+v, %v", list, err)
		}
		if ok, _ := st.Roles.IsClinician(ctx, "@doc:hs"); !ok {
			t.Fatal("not a clinician")
		}
		if removed, _ := st.Roles.RemoveClinician(ctx, "@doc:hs"); !removed {
			t.Fatal("remove failed")
		}
		if removed, _ := st.Roles.RemoveClinician(ctx, "@doc:hs"); removed {
			t.Fatal("second remove reported success")
		}
		if ok, _ := st.Roles.AddAdmin(ctx, "@boss:hs", "@admin:hs"); !ok {
			t.Fatal("add admin failed")
		}
		if ok, _ := st.Roles.IsAdmin(ctx, "@boss:hs"); !ok {
			t.Fatal("not admin")
		}
		if ok, _ := st.Roles.AllowServer(ctx, "clinic-b.example", "@admin:hs"); !ok {
			t.Fatal("allow failed")
		}
		if ok, _ := st.Roles.IsServerAllowed(ctx, "clinic-b.example"); !ok {
			t.Fatal("server not allowed")
		}
		if servers, _ := st.Roles.AllowedServers(ctx); len(servers) != 1 || servers[0].Subject != "clinic-b.example" {
			t.Fatalf("servers = %+v", servers)
		}
		if ok, _ := st.Roles.DenyServer(ctx, "clinic-b.example"); !ok {
			t.Fatal("deny failed")
		}
		if ok, _ := st.Roles.IsServerAllowed(ctx, "clinic-b.example"); ok {
			t.Fatal("server still allowed")
		}
	})
}

func TestCases(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		c := &store.Case{Title: "Wound care", MRN: "123", CaseRoomID: "!case:hs", PatientRoomID: "!pat:hs", CreatedBy: "@doc:hs"}
		if err := st.Cases.Create(ctx, c, "$cmd"); err != nil || c.ID == 0 {
			t.Fatalf("create = %v, id %d", err, c.ID)
		}
		if err := st.Cases.Create(ctx, &store.Case{Title: "x", CaseRoomID: "!other:hs", CreatedBy: "@doc:hs"}, "$cmd"); err == nil {
			t.Fatal("a second case from the same command event was stored")
		}
		for _, room := range []string{"!case:hs", "!pat:hs"} {
			got, err := st.Cases.ByRoom(ctx, idRoom(room))
			if err != nil || got == nil || got.ID != c.ID || got.Title != "Wound care" || got.MRN != "123" || !got.Open() {
				t.Fatalf("ByRoom(%s) = %+v, %v", room, got, err)
			}
		}
		if got, _ := st.Cases.ByRoom(ctx, "!nope:hs"); got != nil {
			t.Fatal("found a case for an unknown room")
		}
		if ok, _ := st.Cases.AddTeamMember(ctx, c.ID, "@doc:hs", "", "@doc:hs"); !ok {
			t.Fatal("add team member failed")
		}
		if ok, _ := st.Cases.AddTeamMember(ctx, c.ID, "@doc:hs", "", "@doc:hs"); ok {
			t.Fatal("duplicate team member added")
		}
		_, _ = st.Cases.AddTeamMember(ctx, c.ID, "@nurse:hs", "wound nurse", "@doc:hs")
		team, _ := st.Cases.Team(ctx, c.ID)
		if len(team) != 2 || team[1].Label != "wound nurse" {
			t.Fatalf("team = %+v", team)
		}
		mine, _ := st.Cases.ForMember(ctx, "@nurse:hs")
		if len(mine) != 1 || mine[0].ID != c.ID {
			t.Fatalf("cases of nurse = %+v", mine)
		}
		if ok, _ := st.Cases.AddPatient(ctx, c.ID, "@pat:hs", "@doc:hs"); !ok {
			t.Fatal("add patient failed")
		}
		if ok, _ := st.Cases.AddPatient(ctx, c.ID, "@pat:hs", "@doc:hs"); ok {
			t.Fatal("patient added twice")
		}
		_ = st.Cases.SetPatientMembership(ctx, c.ID, "@pat:hs", true)
		_ = st.Cases.SetPatientMembership(ctx, c.ID, "@pat:hs", false)
		if ok, _ := st.Cases.IsPatientOf(ctx, c.ID, "@pat:hs"); ok {
			t.Fatal("a patient who left still counts")
		}
		if ok, _ := st.Cases.IsAnyPatient(ctx, "@pat:hs"); !ok {
			t.Fatal("former patient not remembered")
		}
		if ok, _ := st.Cases.AddPatient(ctx, c.ID, "@pat:hs", "@doc:hs"); !ok {
			t.Fatal("re-inviting a patient who left failed")
		}
		patients, _ := st.Cases.Patients(ctx, c.ID)
		if len(patients) != 1 || !patients[0].LeftAt.IsZero() || patients[0].JoinedAt.IsZero() {
			t.Fatalf("patients = %+v", patients)
		}
		if err := st.Cases.Close(ctx, c.ID, "@doc:hs"); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Cases.ByID(ctx, c.ID); got.Open() || got.ClosedBy != "@doc:hs" {
			t.Fatalf("closed case = %+v", got)
		}
	})
}

func TestAuditAndEffects(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		start := time.Now().Add(-time.Second)
		for i, e := range []*store.AuditEntry{
			{Actor: "@doc:hs", Action: "command:case new", Outcome: "ok", CaseID: 1, RoomID: "!r:hs", EventID: "$1"},
			{Actor: "@pat:hs", Action: "command:team add", Outcome: "refused:room", CaseID: 1},
			{Actor: "@doc:hs", Action: "read:case", Outcome: "ok", CaseID: 2},
		} {
			if err := st.Audit.Add(ctx, e); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
		}
		all, _ := st.Audit.List(ctx, store.AuditFilter{})
		if len(all) != 3 || all[0].Action != "read:case" {
			t.Fatalf("all = %+v", all)
		}
		byDoc, _ := st.Audit.List(ctx, store.AuditFilter{Actor: "@doc:hs", CaseID: 1, Since: start})
		if len(byDoc) != 1 || byDoc[0].EventID != "$1" || byDoc[0].RoomID != "!r:hs" {
			t.Fatalf("filtered = %+v", byDoc)
		}
		if got, _ := st.Effects.Get(ctx, "$e", "case-room"); got != "" {
			t.Fatal("effect before it happened")
		}
		_ = st.Effects.Put(ctx, "$e", "case-room", "!a:hs")
		_ = st.Effects.Put(ctx, "$e", "case-room", "!b:hs")
		if got, _ := st.Effects.Get(ctx, "$e", "case-room"); got != "!a:hs" {
			t.Fatalf("effect = %q, want the first result kept", got)
		}
	})
}

func TestRemoveTeamMembersOfServer(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, cfg store.Config) {
		ctx := context.Background()
		st := open(t, cfg)
		open1 := &store.Case{Title: "a", CaseRoomID: "!a:hs", PatientRoomID: "!ap:hs", CreatedBy: "@doc:hs"}
		closed := &store.Case{Title: "b", CaseRoomID: "!b:hs", PatientRoomID: "!bp:hs", CreatedBy: "@doc:hs"}
		if err := st.Cases.Create(ctx, open1, "$a"); err != nil {
			t.Fatal(err)
		}
		if err := st.Cases.Create(ctx, closed, "$b"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*store.Case{open1, closed} {
			for _, u := range []string{"@doc:hs", "@remote:b.example", "@other:xb.example", "@x:b_example"} {
				if _, err := st.Cases.AddTeamMember(ctx, c.ID, id.UserID(u), "", "@doc:hs"); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := st.Cases.Close(ctx, closed.ID, "@doc:hs"); err != nil {
			t.Fatal(err)
		}
		n, err := st.Cases.RemoveTeamMembersOfServer(ctx, "b.example")
		if err != nil || n != 2 {
			t.Fatalf("removed %d, %v; want 2 (only users of exactly b.example)", n, err)
		}
		for _, c := range []*store.Case{open1, closed} {
			team, _ := st.Cases.Team(ctx, c.ID)
			if len(team) != 3 {
				t.Fatalf("team of case %d = %+v", c.ID, team)
			}
			for _, m := range team {
				if m.UserID == "@remote:b.example" {
					t.Fatal("user of the denied server still on a team")
				}
			}
		}
		cases, err := st.Cases.OpenCases(ctx)
		if err != nil || len(cases) != 1 || cases[0].ID != open1.ID {
			t.Fatalf("open cases = %+v, %v", cases, err)
		}
	})
}
