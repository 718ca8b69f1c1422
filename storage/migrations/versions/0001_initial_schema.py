"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24 01:54:21.116653
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('mode', sa.Enum('pairwise', 'listwise', 'pointwise', name='mode', create_constraint=True, native_enum=False), nullable=False),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('model', sa.String(length=512), nullable=False),
    sa.Column('adapter', sa.String(length=512), nullable=True),
    sa.Column('temperature', sa.Float(), nullable=False),
    sa.Column('top_p', sa.Float(), nullable=False),
    sa.Column('max_new_tokens', sa.Integer(), nullable=False),
    sa.Column('guidelines', sa.Text(), nullable=False),
    sa.Column('overlap', sa.Integer(), nullable=False),
    sa.Column('queue_target', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('k >= 1 AND k <= 16', name=op.f('ck_projects_k_range')),
    sa.CheckConstraint('overlap >= 1', name=op.f('ck_projects_overlap_positive')),
    sa.CheckConstraint('queue_target >= 0', name=op.f('ck_projects_queue_target_nonnegative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
    sa.UniqueConstraint('name', name=op.f('uq_projects_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.Enum('admin', 'annotator', name='role', create_constraint=True, native_enum=False), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('prompts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('messages', sa.JSON(), nullable=False),
    sa.Column('is_chat', sa.Boolean(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_prompts_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prompts')),
    sa.UniqueConstraint('project_id', 'content_hash', name='uq_prompts_project_content')
    )
    with op.batch_alter_table('prompts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prompts_project_id'), ['project_id'], unique=False)

    op.create_table('items',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('ready', 'done', name='item_status', create_constraint=True, native_enum=False), nullable=False),
    sa.Column('leased_by', sa.Integer(), nullable=True),
    sa.Column('lease_expires', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['leased_by'], ['users.id'], name=op.f('fk_items_leased_by_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_items_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_items_prompt_id_prompts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_items'))
    )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index('ix_items_project_status', ['project_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_items_prompt_id'), ['prompt_id'], unique=False)

    op.create_table('rankings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('groups', sa.JSON(), nullable=False),
    sa.Column('shown_order', sa.JSON(), nullable=False),
    sa.Column('rationale', sa.Text(), nullable=True),
    sa.Column('source', sa.Enum('human', 'import', name='label_source', create_constraint=True, native_enum=False), nullable=False),
    sa.Column('time_taken_ms', sa.Integer(), nullable=True),
    sa.Column('client_token', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_rankings_item_id_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_rankings_prompt_id_prompts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_rankings_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rankings')),
    sa.UniqueConstraint('client_token', name=op.f('uq_rankings_client_token')),
    sa.UniqueConstraint('item_id', 'user_id', name='uq_rankings_item_user')
    )
    with op.batch_alter_table('rankings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rankings_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rankings_prompt_id'), ['prompt_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rankings_user_id'), ['user_id'], unique=False)

    op.create_table('responses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=True),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('model', sa.String(length=512), nullable=False),
    sa.Column('adapter', sa.String(length=512), nullable=True),
    sa.Column('sampling', sa.JSON(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=True),
    sa.Column('num_tokens', sa.Integer(), nullable=True),
    sa.Column('finish_reason', sa.String(length=16), nullable=True),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_responses_item_id_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_responses_prompt_id_prompts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_responses'))
    )
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_responses_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_responses_prompt_id'), ['prompt_id'], unique=False)

    op.create_table('skips',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_skips_item_id_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_skips_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_skips')),
    sa.UniqueConstraint('item_id', 'user_id', name='uq_skips_item_user')
    )
    op.create_table('pairwise_labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('response_a_id', sa.Integer(), nullable=False),
    sa.Column('response_b_id', sa.Integer(), nullable=False),
    sa.Column('shown_order', sa.JSON(), nullable=False),
    sa.Column('choice', sa.Enum('a', 'b', 'tie', 'both_bad', name='choice', create_constraint=True, native_enum=False), nullable=False),
    sa.Column('strength', sa.Integer(), nullable=True),
    sa.Column('rationale', sa.Text(), nullable=True),
    sa.Column('source', sa.Enum('human', 'import', name='label_source', create_constraint=True, native_enum=False), nullable=False),
    sa.Column('time_taken_ms', sa.Integer(), nullable=True),
    sa.Column('client_token', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('response_a_id <> response_b_id', name=op.f('ck_pairwise_labels_distinct_responses')),
    sa.CheckConstraint('strength IS NULL OR (strength >= 1 AND strength <= 3)', name=op.f('ck_pairwise_labels_strength_range')),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_pairwise_labels_item_id_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_pairwise_labels_prompt_id_prompts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['response_a_id'], ['responses.id'], name=op.f('fk_pairwise_labels_response_a_id_responses'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['response_b_id'], ['responses.id'], name=op.f('fk_pairwise_labels_response_b_id_responses'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_pairwise_labels_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pairwise_labels')),
    sa.UniqueConstraint('client_token', name=op.f('uq_pairwise_labels_client_token')),
    sa.UniqueConstraint('item_id', 'user_id', name='uq_pairwise_labels_item_user')
    )
    with op.batch_alter_table('pairwise_labels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pairwise_labels_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pairwise_labels_prompt_id'), ['prompt_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_pairwise_labels_user_id'), ['user_id'], unique=False)

    op.create_table('ratings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('response_id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('score', sa.Integer(), nullable=False),
    sa.Column('rationale', sa.Text(), nullable=True),
    sa.Column('client_token', sa.String(length=80), nullable=True),
    sa.Column('source', sa.Enum('human', 'import', name='label_source', create_constraint=True, native_enum=False), nullable=False),
    sa.Column('time_taken_ms', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('score >= 1 AND score <= 5', name=op.f('ck_ratings_score_range')),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_ratings_item_id_items'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['response_id'], ['responses.id'], name=op.f('fk_ratings_response_id_responses'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_ratings_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ratings')),
    sa.UniqueConstraint('client_token', name=op.f('uq_ratings_client_token')),
    sa.UniqueConstraint('response_id', 'user_id', name='uq_ratings_response_user')
    )
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ratings_item_id'), ['item_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ratings_response_id'), ['response_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ratings_user_id'), ['user_id'], unique=False)

    op.create_table('rewrites',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prompt_id', sa.Integer(), nullable=False),
    sa.Column('pairwise_label_id', sa.Integer(), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['pairwise_label_id'], ['pairwise_labels.id'], name=op.f('fk_rewrites_pairwise_label_id_pairwise_labels'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['prompt_id'], ['prompts.id'], name=op.f('fk_rewrites_prompt_id_prompts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_rewrites_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rewrites')),
    sa.UniqueConstraint('pairwise_label_id', name=op.f('uq_rewrites_pairwise_label_id'))
    )
    with op.batch_alter_table('rewrites', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rewrites_prompt_id'), ['prompt_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rewrites_user_id'), ['user_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('rewrites', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rewrites_user_id'))
        batch_op.drop_index(batch_op.f('ix_rewrites_prompt_id'))

    op.drop_table('rewrites')
    with op.batch_alter_table('ratings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ratings_user_id'))
        batch_op.drop_index(batch_op.f('ix_ratings_response_id'))
        batch_op.drop_index(batch_op.f('ix_ratings_item_id'))

    op.drop_table('ratings')
    with op.batch_alter_table('pairwise_labels', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pairwise_labels_user_id'))
        batch_op.drop_index(batch_op.f('ix_pairwise_labels_prompt_id'))
        batch_op.drop_index(batch_op.f('ix_pairwise_labels_item_id'))

    op.drop_table('pairwise_labels')
    op.drop_table('skips')
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_responses_prompt_id'))
        batch_op.drop_index(batch_op.f('ix_responses_item_id'))

    op.drop_table('responses')
    with op.batch_alter_table('rankings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rankings_user_id'))
        batch_op.drop_index(batch_op.f('ix_rankings_prompt_id'))
        batch_op.drop_index(batch_op.f('ix_rankings_item_id'))

    op.drop_table('rankings')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_items_prompt_id'))
        batch_op.drop_index('ix_items_project_status')

    op.drop_table('items')
    with op.batch_alter_table('prompts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prompts_project_id'))

    op.drop_table('prompts')
    op.drop_table('users')
    op.drop_table('projects')
