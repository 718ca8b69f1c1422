"""review and gold items: a review status, reviewer and correction on every label; gold answers on
items and the share of gold items in annotators' queues

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 12:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

LABEL_TABLES = ('pairwise_labels', 'rankings', 'ratings')
REVIEW_STATUSES = ('submitted', 'accepted', 'rejected', 'corrected')


def upgrade() -> None:
    for table in LABEL_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('review_status', sa.Enum(*REVIEW_STATUSES, name='review_status',
                                                                   create_constraint=True, native_enum=False),
                                          server_default='submitted', nullable=False))
            batch_op.add_column(sa.Column('reviewer_id', sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True))
            batch_op.add_column(sa.Column('correction', sa.JSON(), nullable=True))
            batch_op.create_foreign_key(op.f(f'fk_{table}_reviewer_id_users'), 'users', ['reviewer_id'], ['id'],
                                        ondelete='SET NULL')

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gold_answer', sa.JSON(), nullable=True))

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gold_share', sa.Float(), server_default='0.1', nullable=False))
        batch_op.create_check_constraint(op.f('ck_projects_gold_share_range'),
                                         sa.text('gold_share >= 0 AND gold_share <= 1'))


def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_projects_gold_share_range'), type_='check')
        batch_op.drop_column('gold_share')

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('gold_answer')

    for table in LABEL_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(op.f(f'fk_{table}_reviewer_id_users'), type_='foreignkey')
            batch_op.drop_column('correction')
            batch_op.drop_column('reviewed_at')
            batch_op.drop_column('reviewer_id')
            batch_op.drop_column('review_status')
