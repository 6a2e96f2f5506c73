package bot

// AnswerBytes is the size budget of one answer: the bytes of its body and formatted_body together. Homeservers refuse
// events over 64 KiB (the whole event, after encryption, which adds about a third), so answers that can grow are
// paged (e.g. `checkins … page 2`) or split into parts under this budget.
var AnswerBytes = 24 * 1024
