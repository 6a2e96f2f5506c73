package bot

import (
	"bytes"
	"context"
	"encoding/json"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// pushedCrypto is what a homeserver with the appservice extensions MSC2409 (to-device events) and MSC3202 (device
// list changes, one-time key counts) pushes for the bot's device inside a transaction. Synapse does, and does not
// serve /sync to appservice users at all; Dendrite pushes none of it, and the device's own /sync gets it there.
// Both the stable and the unstable field names are read, as mautrix's own appservice does.
type pushedCrypto struct {
	ToDevice         []*event.Event         `json:"to_device"`
	MSC2409ToDevice  []*event.Event         `json:"de.sorunome.msc2409.to_device"`
	DeviceLists      *mautrix.DeviceLists   `json:"device_lists"`
	MSC3202Lists     *mautrix.DeviceLists   `json:"org.matrix.msc3202.device_lists"`
	OTKCounts        appservice.OTKCountMap `json:"device_one_time_keys_count"`
	MSC3202OTKCounts appservice.OTKCountMap `json:"org.matrix.msc3202.device_one_time_keys_count"`
}

// decodePushedCrypto reads the crypto extensions of a transaction body; it returns nil when there are none (or the
// body does not parse, which decodeTransaction reports).
func decodePushedCrypto(body []byte) *pushedCrypto {
	// Most transactions (all of Dendrite's) carry none: a scan for the keys spares them a second parse.
	if !bytes.Contains(body, []byte(`to_device"`)) && !bytes.Contains(body, []byte(`device_lists"`)) &&
		!bytes.Contains(body, []byte(`one_time_keys_count"`)) {
		return nil
	}
	var p pushedCrypto
	if json.Unmarshal(body, &p) != nil {
		return nil
	}
	if p.ToDevice == nil {
		p.ToDevice = p.MSC2409ToDevice
	}
	if p.DeviceLists == nil {
		p.DeviceLists = p.MSC3202Lists
	}
	if p.OTKCounts == nil {
		p.OTKCounts = p.MSC3202OTKCounts
	}
	if len(p.ToDevice) == 0 && p.DeviceLists == nil && len(p.OTKCounts) == 0 {
		return nil
	}
	return &p
}

// forDevice returns the pushed to-device events addressed to userID's deviceID, typed and with their content
// parsed (events that do not parse are left out), and that device's one-time key counts (nil when none were pushed).
func (p *pushedCrypto) forDevice(userID id.UserID, deviceID id.DeviceID) (toDevice []*event.Event, otk *mautrix.OTKCount) {
	for _, evt := range p.ToDevice {
		if evt == nil || evt.ToUserID != userID || evt.ToDeviceID != deviceID {
			continue
		}
		evt.Type.Class = event.ToDeviceEventType
		evt.Mautrix.EventSource = event.SourceToDevice
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			continue
		}
		toDevice = append(toDevice, evt)
	}
	if counts, ok := p.OTKCounts[userID][deviceID]; ok {
		counts.UserID, counts.DeviceID = userID, deviceID
		otk = &counts
	}
	return toDevice, otk
}

// pushReceiver takes the crypto data a homeserver pushes in transactions (the bot's device).
type pushReceiver interface {
	handlePushed(ctx context.Context, pushed *pushedCrypto)
}

// takePushed hands pushed crypto data to the bot's device. It reports false when the device should take it but is
// not ready yet (the transaction is then not acknowledged, so that the homeserver sends it again); a build without
// encryption ignores it.
func (b *Bot) takePushed(ctx context.Context, pushed *pushedCrypto) bool {
	if !encryptionBuilt {
		return true
	}
	receiver := b.pushedTo.Load()
	if receiver == nil {
		return false
	}
	(*receiver).handlePushed(ctx, pushed)
	return true
}
