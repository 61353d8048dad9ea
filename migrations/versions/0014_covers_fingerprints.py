"""Cover stills and audio fingerprints: cover_3000/1000/300 file kinds, held tracks, track_fingerprints

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-03 20:00:00.000000

The cover as uploaded stops being published (its EXIF may say where it was taken): existing rows that
were not pinned yet become 'unpinned'; pinned ones keep their pin until the track is re-ingested.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0014'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = ('source', 'mp3_320', 'mp3_128', 'opus_96', 'preview', 'cover', 'metadata', 'waveform')
KINDS_AFTER = (*KINDS_BEFORE, 'cover_3000', 'cover_1000', 'cover_300')
STATUSES_BEFORE = ('ingesting', 'ready', 'failed')
STATUSES_AFTER = ('ingesting', 'held', 'ready', 'failed')


def _check(table: str, name: str, column: str, values: tuple[str, ...]) -> None:
    op.drop_constraint(op.f(f'ck_{table}_{name}'), table, type_='check')
    op.create_check_constraint(op.f(f'ck_{table}_{name}'), table, f"{column} IN ({', '.join(repr(v) for v in values)})")


def upgrade() -> None:
    _check('track_files', 'known_kind', 'kind', KINDS_AFTER)
    _check('tracks', 'known_status', 'status', STATUSES_AFTER)
    op.execute("UPDATE track_files SET pin_state = 'unpinned' WHERE kind = 'cover' AND pin_state IN ('pending', 'failed')")
    op.create_table(
        'track_fingerprints',
        sa.Column('track_id', sa.Uuid(), nullable=False),
        sa.Column('fingerprint', postgresql.BYTEA(), nullable=False, comment='Raw Chromaprint items, uint32 little-endian.'),
        sa.Column('hashes', postgresql.ARRAY(sa.Integer()), nullable=False, comment='Distinct top 28 bits of the items.'),
        sa.Column('matched_track_id', sa.Uuid(), nullable=True),
        sa.Column('similarity', sa.Numeric(precision=4, scale=3), nullable=True),
        sa.Column('decision', sa.String(length=8), nullable=True, comment='The duplicate policy applied to the match.'),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.CheckConstraint('similarity BETWEEN 0 AND 1', name=op.f('ck_track_fingerprints_similarity_is_fraction')),
        sa.CheckConstraint("decision IN ('allow', 'hold', 'reject')", name=op.f('ck_track_fingerprints_known_decision')),
        sa.CheckConstraint('(decision IS NULL) = (similarity IS NULL)', name=op.f('ck_track_fingerprints_decision_with_similarity')),
        sa.CheckConstraint('octet_length(fingerprint) % 4 = 0', name=op.f('ck_track_fingerprints_fingerprint_is_uint32s')),
        sa.ForeignKeyConstraint(['track_id'], ['tracks.id'], name=op.f('fk_track_fingerprints_track_id_tracks'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['matched_track_id'], ['tracks.id'], name=op.f('fk_track_fingerprints_matched_track_id_tracks'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('track_id', name=op.f('pk_track_fingerprints')),
    )
    op.create_index('ix_track_fingerprints_hashes', 'track_fingerprints', ['hashes'], unique=False, postgresql_using='gin')


def downgrade() -> None:
    op.drop_index('ix_track_fingerprints_hashes', table_name='track_fingerprints', postgresql_using='gin')
    op.drop_table('track_fingerprints')
    op.execute("UPDATE tracks SET status = 'ready' WHERE status = 'held'")
    _check('tracks', 'known_status', 'status', STATUSES_BEFORE)
    op.execute("DELETE FROM track_files WHERE kind IN ('cover_3000', 'cover_1000', 'cover_300')")
    _check('track_files', 'known_kind', 'kind', KINDS_BEFORE)
