"""IPFS pins of track files and NFT metadata (issue 3): a track without a cover gets a generated waveform image

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 12:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = ('source', 'mp3_320', 'mp3_128', 'opus_96', 'preview', 'cover', 'metadata')
KINDS_AFTER = (*KINDS_BEFORE, 'waveform')


def _kind_check(kinds: tuple[str, ...]) -> None:
    op.drop_constraint(op.f('ck_track_files_known_kind'), 'track_files', type_='check')
    op.create_check_constraint(
        op.f('ck_track_files_known_kind'), 'track_files', f"kind IN ({', '.join(repr(k) for k in kinds)})"
    )


def upgrade() -> None:
    _kind_check(KINDS_AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM track_files WHERE kind = 'waveform'")
    _kind_check(KINDS_BEFORE)
