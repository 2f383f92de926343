/*
 * fuzz_record.h - the structured input of fuzz_record.c, shared with the
 * seed generator gen_record_seeds.c.
 *
 *   byte 0     flags (FUZZ_REC_*)
 *   byte 1     low nibble: config (0 defaults, 1 harshest, 2 mildest);
 *              high nibble: clock (0 FUZZ_REC_NOW, 1 zero, 2 year 9999)
 *   bytes 2-3  wrong password's 16-bit hash (with FUZZ_REC_PW), little-endian
 *   bytes 4-7  user name hash, little-endian
 *   then       source, network, user and pair records, each in its stored
 *              layout (ag_rec_size bytes); a missing or undecodable record
 *              is a fresh one, as in the guard.
 */
#ifndef AG_FUZZ_RECORD_H
#define AG_FUZZ_RECORD_H

#define FUZZ_REC_HDR 8

#define FUZZ_REC_ADDR 0x01
#define FUZZ_REC_USER 0x02
#define FUZZ_REC_TRUSTED 0x04
#define FUZZ_REC_PROXY 0x08
#define FUZZ_REC_DENIED 0x10
#define FUZZ_REC_SUCCESS 0x20
#define FUZZ_REC_PW 0x40

/* 2026-11-18T14:13:20.123Z */
#define FUZZ_REC_NOW 1795011200123LL

#endif
