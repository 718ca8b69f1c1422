"""arena, judge verdicts, evaluations, queue order

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 18:34:26.888227
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('judge_verdicts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('judge_model', sa.String(length=512), nullable=False),
    sa.Column('choice', sa.Enum('a', 'b', 'tie', 'both_bad', name='choice', create_constraint=True, native_enum=False), nullable=False),
    sa.Column('prob_a', sa.Float(), nullable=True),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('judge_prompt', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_judge_verdicts_item_id_items'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_judge_verdicts')),
    sa.UniqueConstraint('item_id', 'judge_model', name='uq_judge_verdicts_item_judge')
    )
    with op.batch_alter_table('judge_verdicts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_judge_verdicts_item_id'), ['item_id'], unique=False)

    op.create_table('evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('model_id', sa.Integer(), nullable=True),
    sa.Column('reward_model_id', sa.Integer(), nullable=True),
    sa.Column('adapter', sa.String(length=1024), nullable=True),
    sa.Column('base_model', sa.String(length=512), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_evaluations_job_id_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['model_id'], ['trained_models.id'], name=op.f('fk_evaluations_model_id_trained_models'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_evaluations_project_id_projects'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['reward_model_id'], ['trained_models.id'], name=op.f('fk_evaluations_reward_model_id_trained_models'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations')),
    sa.UniqueConstraint('job_id', name=op.f('uq_evaluations_job_id'))
    )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluations_model_id'), ['model_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_project_id'), ['project_id'], unique=False)

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue_order', sa.Enum('random', 'uncertainty', 'disagreement', name='queue_order', create_constraint=True, native_enum=False), server_default='random', nullable=False))
        batch_op.add_column(sa.Column('queue_reward_model', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('judge_model', sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column('judge_suggestions', sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rm_score', sa.Float(), nullable=True))




def downgrade() -> None:
    
    with op.batch_alter_table('responses', schema=None) as batch_op:
        batch_op.drop_column('rm_score')

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('judge_suggestions')
        batch_op.drop_column('judge_model')
        batch_op.drop_column('queue_reward_model')
        batch_op.drop_column('queue_order')

    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluations_project_id'))
        batch_op.drop_index(batch_op.f('ix_evaluations_model_id'))

    op.drop_table('evaluations')
    with op.batch_alter_table('judge_verdicts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_judge_verdicts_item_id'))

    op.drop_table('judge_verdicts')

